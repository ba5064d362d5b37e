"""The Eventor engine: events, steps, triggers and a store; the facade builds on it."""
