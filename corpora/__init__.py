"""Real per-user typing histories: loading, validation, splits and the tokenizer."""
