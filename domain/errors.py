"""Rejections: the typed answer a rule gives when it says no.

Every rejection carries a code (stable, for programs), its parameters, and a
message for the clerk in both languages. The catalogue below is the only place
those messages are written, so the workstation and the server say the same
thing about the same mistake.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# code -> (简体中文, English); str.format parameters in braces.
MESSAGES: dict[str, tuple[str, str]] = {
    # amounts
    "amount_empty": ("请输入金额。", "Enter an amount."),
    "amount_format": (
        "金额格式不对：只能是数字，最多两位小数，例如 100 或 100.50。",
        "Amount must be a number with at most two decimals, e.g. 100 or 100.50.",
    ),
    "amount_too_many_decimals": (
        "金额最多两位小数（分），“{text}”有三位或更多。",
        "An amount has at most two decimals (fen); “{text}” has more.",
    ),
    "amount_not_positive": ("金额必须大于零。", "The amount must be more than zero."),
    "amount_too_large": (
        "金额不能超过 {limit} 元。",
        "The amount may not exceed {limit} yuan.",
    ),
    "amount_below_minimum": (
        "首次预存至少 {minimum} 元。",
        "The first prepayment must be at least {minimum} yuan.",
    ),
    "payment_method_unknown": ("不认识的支付方式：{method}。", "Unknown payment method: {method}."),
    # identity documents
    "id_empty": ("请输入证件号码。", "Enter the document number."),
    "id_length": (
        "居民身份证号码应为18位，现在是{length}位。",
        "A resident ID number has 18 characters; this one has {length}.",
    ),
    "id_legacy_15": (
        "这是15位旧身份证号码，请使用18位号码。",
        "This is an old 15-digit ID number; use the 18-character number.",
    ),
    "id_characters": (
        "身份证号码前17位必须是数字，最后一位是数字或X。",
        "The first 17 characters must be digits and the last a digit or X.",
    ),
    "id_region": (
        "身份证号码的地区码“{region}”无效。",
        "ID number region code “{region}” is not valid.",
    ),
    "id_birth_date": (
        "身份证号码中的出生日期“{date}”不存在或不合理。",
        "The birth date “{date}” in the ID number is impossible.",
    ),
    "id_check_char": (
        "身份证号码校验位错误（应为{expected}），请核对。",
        "The ID number's check character is wrong (should be {expected}); please check it.",
    ),
    "document_type_unknown": (
        "不认识的证件类型：{doc_type}。",
        "Unknown document type: {doc_type}.",
    ),
    "document_format": (
        "{doc_name}号码格式不对。",
        "The {doc_name} number is not in a valid format.",
    ),
    "number_digits": (
        "号码中有0-9以外的数字字符（可能是粘贴来的），请用键盘重新输入。",
        "The number holds digits other than 0-9 (pasted?); type it again on the keyboard.",
    ),
    # patient fields
    "name_empty": ("请输入姓名。", "Enter the patient's name."),
    "name_control": (
        "姓名含有不可见的控制字符。",
        "The name contains invisible control characters.",
    ),
    "name_characters": (
        "姓名只能包含汉字、字母、间隔号“·”和空格。",
        "A name may contain only Chinese characters, letters, the dot “·” and spaces.",
    ),
    "field_too_long": (
        "{field}太长：最多{limit}个字，现在{length}个。",
        "{field} is too long: at most {limit} characters, this has {length}.",
    ),
    "field_control": (
        "{field}含有不可见的控制字符。",
        "{field} contains invisible control characters.",
    ),
    "sex_unknown": ("性别只能是 男、女 或 未知。", "Sex must be male, female or unknown."),
    "birth_date_format": (
        "出生日期格式应为 年-月-日，例如 1980-05-17。",
        "Birth date must be year-month-day, e.g. 1980-05-17.",
    ),
    "birth_date_impossible": ("出生日期“{date}”不合理。", "The birth date “{date}” is impossible."),
    "birth_date_mismatch": (
        "出生日期与身份证号码不一致（证件上是 {expected}）。",
        "The birth date does not match the ID number (which says {expected}).",
    ),
    "sex_mismatch": (
        "性别与身份证号码不一致。",
        "The sex does not match the ID number.",
    ),
    "phone_empty": ("请至少留一个联系电话。", "Enter at least one contact phone number."),
    "phone_format": (
        "电话号码格式不对：手机11位，固话带区号，例如 010-12345678。",
        "Phone must be an 11-digit mobile or a landline with area code, e.g. 010-12345678.",
    ),
    # patients
    "patient_unknown": ("找不到该患者。", "No such patient."),
    "patient_exists": (
        "该证件号码已登记为患者 {name}。",
        "This document number is already registered to patient {name}.",
    ),
    "patient_mapped": (
        "证件号码与已有患者 {name} 相同，已合并到该患者的档案。",
        "The document number matches existing patient {name}; the record was mapped to it.",
    ),
    "patient_id_taken": ("患者编号已被占用。", "The patient id is already taken."),
    # cards
    "card_empty": ("请刷卡或输入卡号。", "Swipe the card or enter its number."),
    "card_format": (
        "卡号“{card_no}”无效（应为10位数字且校验位正确）。",
        "Card number “{card_no}” is not valid (10 digits with a correct check digit).",
    ),
    "card_unknown": ("卡号 {card_no} 未发行。", "Card {card_no} has not been issued."),
    "card_lost": (
        "卡 {card_no} 已挂失，不能使用。",
        "Card {card_no} has been reported lost and cannot be used.",
    ),
    "card_not_active": (
        "卡 {card_no} 状态为“{status}”，不能使用。",
        "Card {card_no} is {status} and cannot be used.",
    ),
    "card_already_issued": (
        "卡号 {card_no} 已经发过。",
        "Card number {card_no} has already been issued.",
    ),
    "card_number_not_leased": (
        "卡号 {card_no} 不在本工作站领用的号段内。",
        "Card number {card_no} is not in a block leased to this workstation.",
    ),
    "patient_has_active_card": (
        "该患者已有在用的卡 {card_no}；如卡丢失请办理挂失补卡。",
        "This patient already has active card {card_no}; for a lost card use loss report and replacement.",
    ),
    # money
    "transfer_exists": ("该笔款项已记账。", "This payment has already been booked."),
    "receipt_number_used": (
        "收据号 {receipt_no} 已被使用。",
        "Receipt number {receipt_no} is already used.",
    ),
    "receipt_number_not_leased": (
        "收据号 {receipt_no} 不在本工作站领用的号段内。",
        "Receipt number {receipt_no} is not in a block leased to this workstation.",
    ),
    "numbers_exhausted": (
        "本工作站领用的{series}号段已用完，请联网后再试。",
        "This workstation has used up its leased {series} numbers; reconnect to get more.",
    ),
    # shifts
    "shift_unknown": (
        "班次 {shift_id} 不存在，或不是本操作员在本机的班次。",
        "Shift {shift_id} does not exist, or is not this clerk's shift on this workstation.",
    ),
    "shift_closed": (
        "班次 {shift_id} 已交班，不能再收款；请重新登录开新班。",
        "Shift {shift_id} has been closed and takes no more money; log in again to open a new one.",
    ),
    "shift_exists": ("该班次已开过。", "This shift has already been opened."),
    "shift_missing": (
        "尚未开班，不能收款：请注销后重新登录。",
        "No shift is open, so no money can be taken: log out and in again.",
    ),
    "shift_already_open": (
        "您在本机已有未交班的班次（{opened_at} 开班）。",
        "You already have an open shift on this workstation (opened {opened_at}).",
    ),
    # authority
    "role_forbidden": (
        "您的岗位（{roles}）不能办理“{command}”。",
        "Your roles ({roles}) may not perform “{command}”.",
    ),
    "command_unknown": ("不认识的操作：{command}。", "Unknown operation: {command}."),
    "sequence_gap": (
        "中心服务器在等本工作站的第 {expected} 号操作，本机无法补发，其后的操作暂停同步。请联系信息科。",
        "The server waits for this workstation's operation {expected}, which it cannot send; "
        "the operations after it are held. Call IT.",
    ),
    "server_restored": (
        "中心服务器的数据落后于本机（已从备份恢复，未开新纪元）：本机已重新下载数据，并补发了恢复丢失的操作。请告知信息科。",
        "The server was behind this workstation (restored from a backup without a new epoch): "
        "the workstation loaded the data again and sent what the restore lost. Tell IT.",
    ),
    "withdrawn": (
        "该操作已被本工作站撤回：中心服务器此前拒绝过它（恢复备份后重新登记为拒绝）。",
        "This operation was withdrawn by its workstation: the server had refused it before "
        "(recorded as refused again after a restore).",
    ),
    "command_malformed": (
        "操作内容不完整或格式错误：{detail}",
        "The operation is malformed: {detail}",
    ),
    "op_failed": (
        "中心服务器处理该操作时出错（{error}），已记为拒绝，本机其后的操作照常同步。请联系信息科。",
        "The central server failed on this operation ({error}); it is recorded as refused "
        "and this workstation's later operations go on. Call IT.",
    ),
    # flags on an op the server booked: its own time, judged by the server's clock
    "op_time_future": (
        "该操作的时间（{at}）比中心服务器的时钟晚24小时以上，本机时钟可能不准：已记账，并标记请信息科核对。",
        "This operation is dated {at}, more than 24 hours after the server's clock: this PC's "
        "clock may be wrong. It was booked and flagged for IT to check.",
    ),
    "op_time_before_enrolment": (
        "该操作的时间（{at}）早于本工作站注册之时，本机时钟可能不准：已记账，并标记请信息科核对。",
        "This operation is dated {at}, before this workstation was enrolled: this PC's clock "
        "may be wrong. It was booked and flagged for IT to check.",
    ),
    "clerk_unknown": (
        "操作员 {clerk_id} 不存在或已停用。",
        "Clerk {clerk_id} is unknown or disabled.",
    ),
    "signature_invalid": (
        "操作的签名与所记操作员在本机的密钥不符，未予执行：只能以登录者本人的身份办理业务。请告知信息科。",
        "The operation's signature does not match the key of the clerk it names on this "
        "workstation; it was not carried out (work is done only as the clerk who logged in). "
        "Tell IT.",
    ),
    "op_unsigned": (
        "操作未经操作员签名，未予执行：本工作站的操作须由登录的操作员签名。请告知信息科。",
        "The operation is not signed by its clerk and was not carried out: this workstation's "
        "operations must be signed by the clerk who logged in. Tell IT.",
    ),
}


class Rejection(BaseModel):
    """A rule said no. Nothing was written."""

    model_config = ConfigDict(frozen=True)

    code: str
    params: dict[str, Any] = Field(default_factory=dict)
    alternatives: list[str] = Field(default_factory=list)

    def message(self, lang: str = "zh") -> str:
        """The clerk's message; a parameter ``x_zh``/``x_en`` fills ``{x}``."""
        zh, en = MESSAGES.get(self.code, ("操作被拒绝：{code}", "Rejected: {code}"))
        suffix = "_en" if lang.startswith("en") else "_zh"
        template = en if suffix == "_en" else zh
        params = dict(self.params)
        for key, value in self.params.items():
            if key.endswith(suffix):
                params[key[: -len(suffix)]] = value
        try:
            return template.format(code=self.code, **params)
        except (KeyError, IndexError, ValueError):
            return template

    @property
    def message_zh(self) -> str:
        return self.message("zh")

    @property
    def message_en(self) -> str:
        return self.message("en")


class DomainError(Exception):
    """Raised by parsers and validators; carries the rejection to show."""

    def __init__(self, code: str, **params: Any) -> None:
        self.rejection = Rejection(code=code, params=params)
        super().__init__(self.rejection.message("en"))

    @property
    def code(self) -> str:
        return self.rejection.code

    def message(self, lang: str = "zh") -> str:
        return self.rejection.message(lang)
