"""callbot: conversational engine for securities customer service."""

__version__ = "0.1.0"
