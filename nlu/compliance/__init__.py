"""The compliance guard: a rule lexicon from the knowledge base plus a classifier on the sentence encoder.

``lexicon`` finds the rules' wording and its span; ``clauses`` cuts a text into the units the classifier judges;
``classifier`` decides meaning (paraphrase, negation, quotation, question); ``guard.ComplianceGuard`` combines them
behind one interface for the bot's replies, the knowledge base's answers, transcripts and the CLI.
"""
