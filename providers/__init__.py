"""The only code that talks to upstreams."""
