"""Deposit receipts (预存收据): the text shown on screen and written to a
printable file. A receipt is made only after the payment is committed locally
with its outbox entry; one made before the server confirmed the payment says
so in both languages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from domain.money import PAYMENT_METHOD_NAMES, PaymentMethod, format_yuan
from local_db.files import private_directory, private_file

_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_UNITS = ["", "拾", "佰", "仟"]
_SECTIONS = ["", "万", "亿"]


def yuan_in_words(fen: int) -> str:
    """Amount in Chinese financial capitals: 12345 fen -> 壹佰贰拾叁元肆角伍分."""
    if fen < 0:
        return "负" + yuan_in_words(-fen)
    yuan, rest = divmod(fen, 100)
    jiao, fen_part = divmod(rest, 10)
    words = _integer_words(yuan) + "元" if yuan else ""
    if jiao == 0 and fen_part == 0:
        return (words or "零元") + "整"
    if jiao:
        words += _DIGITS[jiao] + "角"
    elif yuan:
        words += "零"
    if fen_part:
        words += _DIGITS[fen_part] + "分"
    return words


def _integer_words(number: int) -> str:
    sections: list[str] = []
    index = 0
    need_zero = False
    while number > 0:
        number, section = divmod(number, 10_000)
        if section:
            text = _section_words(section) + _SECTIONS[index]
            if need_zero:
                text += "零"
            sections.insert(0, text)
            need_zero = section < 1000
        elif sections:
            need_zero = True
        index += 1
    result = "".join(sections)
    return result.removesuffix("零")


def _section_words(section: int) -> str:
    text = ""
    zero = False
    for position in range(3, -1, -1):
        digit = (section // 10**position) % 10
        if digit == 0:
            zero = bool(text)
            continue
        if zero:
            text += "零"
            zero = False
        text += _DIGITS[digit] + _UNITS[position]
    return text


@dataclass(frozen=True)
class Receipt:
    receipt_no: str
    kind: str  # "first_prepayment" | "top_up"
    at: str
    hospital: str
    window: str
    clerk_name: str
    patient_name: str
    card_no: str
    amount_fen: int
    method: str
    balance_after_fen: int
    provisional: bool

    def render(self, lang: str) -> str:
        en = lang.startswith("en")
        method_zh, method_en = PAYMENT_METHOD_NAMES[PaymentMethod(self.method)]
        title = {
            "first_prepayment": (
                "预存收据（发卡首次预存）",
                "Deposit receipt (first prepayment with new card)",
            ),
            "top_up": ("预存收据（充值）", "Deposit receipt (top-up)"),
        }[self.kind]
        rows = [
            (("收据号", "Receipt no."), self.receipt_no),
            (("时间", "Time"), self.at.replace("T", " ")[:19]),
            (("患者", "Patient"), self.patient_name),
            (("卡号", "Card no."), self.card_no),
            (("金额", "Amount"), f"¥{format_yuan(self.amount_fen)}"),
            (("大写", "In words"), yuan_in_words(self.amount_fen)),
            (("支付方式", "Paid by"), method_en if en else method_zh),
            (("预存余额", "Deposit balance"), f"¥{format_yuan(self.balance_after_fen)}"),
            (("收款员", "Cashier"), self.clerk_name),
            (("窗口", "Window"), self.window),
        ]
        width = 44
        lines = [
            self.hospital.center(width).rstrip(),
            (title[1] if en else title[0]).center(width).rstrip(),
            "-" * width,
        ]
        for (zh, label_en), value in rows:
            lines.append(f"{label_en if en else zh}: {value}")
        lines.append("-" * width)
        if self.provisional:
            lines.append(
                "PROVISIONAL: not yet confirmed by the central server."
                if en
                else "临时收据：尚未与中心服务器确认。"
            )
        lines.append(
            "请妥善保管，挂失、退费凭此收据。"
            if not en
            else "Keep this receipt: needed for loss reports and refunds."
        )
        return "\n".join(lines) + "\n"

    def write(self, directory: Path, lang: str) -> Path:
        """Write the printable file (UTF-8 text), durably, named by receipt number."""
        private_directory(directory)  # patients' names and payments
        path = directory / f"{self.receipt_no}.txt"
        private_file(path)
        path.write_text(self.render(lang), encoding="utf-8")
        return path
