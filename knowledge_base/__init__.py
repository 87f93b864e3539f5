"""Knowledge base: scenarios, intents, extension questions, rules, records; SQLAlchemy 2 store."""
