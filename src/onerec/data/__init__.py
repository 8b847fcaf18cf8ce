"""Stage 1 of the data flow: interaction logs, item and user tables, sessions and splits."""
