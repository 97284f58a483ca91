"""Ray Tune wiring for BalPoE studies; nothing model-specific lives here."""
