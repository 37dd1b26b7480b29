"""Evaluation: question sets, metrics (pure), runner, reports. Import as ``from eval import ...``."""
