"""The HTTP edge: parse just enough, authenticate, map errors, stream bytes back."""
