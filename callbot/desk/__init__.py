"""The live agent desk: chats the bot handed over wait here until an agent picks them up."""
