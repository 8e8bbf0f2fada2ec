"""What every workstation screen shares: the desk, the clerk's language, and
key bindings whose descriptions follow the language (BINDINGS carry catalogue
keys; the footer and the command palette show the translation)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from textual.binding import ActiveBinding
from textual.screen import ModalScreen, Screen

from workstation.desk import DomainError
from workstation.desk.i18n import I18n

if TYPE_CHECKING:
    from workstation.desk import CashierDesk, Desk

ResultT = TypeVar("ResultT")


class Translated:
    """Mixin for screens: ``self.desk``, ``self.t()``, translated bindings."""

    app: Any

    @property
    def desk(self) -> Desk:
        return self.app.desk  # type: ignore[no-any-return,unused-ignore]

    @property
    def cashier(self) -> CashierDesk:
        """The cashier window's desk."""
        return self.app.cashier  # type: ignore[no-any-return,unused-ignore]

    @property
    def i18n(self) -> I18n:
        return self.app.i18n  # type: ignore[no-any-return,unused-ignore]

    def t(self, key: str, **params: object) -> str:
        return self.i18n.t(key, **params)

    def explain(self, exc: BaseException) -> str:
        """A clerk-readable message for a refusal or a mistake in what was typed."""
        rejection = getattr(exc, "rejection", None)
        if rejection is not None:
            return self.i18n.rejection(rejection)
        if isinstance(exc, DomainError):
            return exc.message(self.i18n.language)
        message = getattr(exc, "message", None)
        if callable(message):
            return str(message(self.i18n.language))
        return self.t("error.unexpected", error=type(exc).__name__)

    def apply_language(self) -> None:
        """Re-label everything after a language switch; screens extend this."""
        refresh = getattr(self, "refresh_bindings", None)
        if refresh is not None:
            refresh()


def _translate(screen: Translated, bindings: dict[str, ActiveBinding]) -> dict[str, ActiveBinding]:
    out: dict[str, ActiveBinding] = {}
    for key, active in bindings.items():
        binding = active.binding
        text = screen.t(binding.description) if binding.description else ""
        out[key] = ActiveBinding(
            active.node,
            dataclasses.replace(binding, description=text),
            active.enabled,
            active.tooltip,
        )
    return out


class DeskScreen(Translated, Screen[ResultT]):
    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        return _translate(self, super().active_bindings)


class DeskModal(Translated, ModalScreen[ResultT]):
    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        return _translate(self, super().active_bindings)
