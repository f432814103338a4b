"""What a call cost: token usage (as reported, or counted with tiktoken) and its price in exact USD."""
