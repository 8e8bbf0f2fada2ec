"""The cashier window (收费窗口): the one-card system's commands, a module each."""

from . import cancel_card, issue_card, top_up

__all__ = ["cancel_card", "issue_card", "top_up"]
