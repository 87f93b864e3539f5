"""Rasa-side input channels (run inside Rasa's Python 3.10 environment)."""
