"""Staff sign-in: accounts and passwords, sessions and API tokens, the route policy, and its enforcement."""
