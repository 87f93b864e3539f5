"""Custom actions for Rasa (rasa-sdk 3.21, Python 3.11); they share the project's SQL database."""

from actions.call import ActionCallEnded, ActionScriptTurn, ActionStartCall
from actions.faq import (
    ActionAnswerFaq,
    ActionChatFallback,
    ActionClassifyComplaint,
    ActionGoodbye,
    ActionHandoff,
    ActionSayWhoWeAre,
)

__all__ = ["ActionAnswerFaq", "ActionCallEnded", "ActionChatFallback", "ActionClassifyComplaint", "ActionGoodbye", "ActionHandoff",
           "ActionSayWhoWeAre", "ActionScriptTurn", "ActionStartCall"]
