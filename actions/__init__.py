"""Custom actions for Rasa (rasa-sdk 3.21, Python 3.11); they share the project's SQL database."""

from actions.answer_faq import ActionAnswerFaq

__all__ = ["ActionAnswerFaq"]
