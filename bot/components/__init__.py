"""Rasa-side components. They run inside Rasa's Python 3.10 environment: no torch, no project imports."""
