"""The conversation history: an encrypted SQLite database and the key that opens it."""
