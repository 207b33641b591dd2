"""Pruning: masks, importance criteria, model surgery, ratios and schedules."""
