"""The customers' chat channel: the widget's socket.io endpoint and REST fallback, relayed to Rasa or to an agent."""
