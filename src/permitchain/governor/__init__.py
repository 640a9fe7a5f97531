"""Governor (P3.2): the policy gate. ``policy`` decides, ``service`` runs it on the stream."""
