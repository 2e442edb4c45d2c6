"""``tlx verify``: compare → gate (one set of tolerance profiles) → report; localize."""
