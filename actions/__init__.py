"""Custom actions for Rasa (rasa-sdk 3.21, Python 3.11); they share the project's SQL database.

Content actions collect what to say; ``action_check_compliance`` sends it and ``action_record_outcome``
records how the conversation ended (the rules in ``bot/data/rules.yml`` run all three, in that order).
"""

from actions.call import ActionCallEnded, ActionScriptTurn, ActionStartCall
from actions.check_compliance import ActionCheckCompliance
from actions.faq import (
    ActionAnswerFaq,
    ActionChatFallback,
    ActionClassifyComplaint,
    ActionGoodbye,
    ActionGreet,
    ActionHandoff,
    ActionSayWhoWeAre,
)
from actions.record_outcome import ActionRecordOutcome

__all__ = ["ActionAnswerFaq", "ActionCallEnded", "ActionChatFallback", "ActionCheckCompliance", "ActionClassifyComplaint",
           "ActionGoodbye", "ActionGreet", "ActionHandoff", "ActionRecordOutcome", "ActionSayWhoWeAre", "ActionScriptTurn",
           "ActionStartCall"]
