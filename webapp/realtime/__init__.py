"""The thin Channels relay: JWT auth middleware, consumers and routing."""
