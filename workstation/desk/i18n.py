"""The clerk's two languages: 简体中文 and English.

Every string a screen shows comes from CATALOG by key. The default comes from
the locale (zh_* gives Chinese, anything else English) and the clerk can switch
at any moment (F9). Rule messages (rejections) carry both languages themselves
(domain.errors).
"""

from __future__ import annotations

import locale
import os
from collections.abc import Callable, Iterable

from domain.cards import CardStatus
from domain.commands import COMMANDS
from domain.errors import Rejection
from domain.identity import DOCUMENT_NAMES, DocumentType
from domain.ledger import TransferKind
from domain.money import PAYMENT_METHOD_NAMES, PaymentMethod
from domain.patients.fields import SEX_NAMES
from domain.roles import ROLE_NAMES

LANGUAGES = ("zh", "en")

CATALOG: dict[str, tuple[str, str]] = {
    # app and keys
    "app.title": ("医院窗口工作站", "Hospital window workstation"),
    "key.palette": ("命令", "Commands"),
    "palette": ("命令", "Commands"),  # Textual's own command-palette binding
    "key.language": ("English", "中文"),
    "key.network": ("断网/恢复(演示)", "Cut/restore net (demo)"),
    "key.back": ("返回", "Back"),
    "key.quit": ("退出", "Quit"),
    "key.login": ("登录", "Log in"),
    "key.logout": ("注销", "Log out"),
    "key.cashier": ("收费窗口", "Cashier desk"),
    "key.admission": ("入院登记", "Admission desk"),
    "key.registrar": ("医技登记", "Exam registration"),
    "key.sync_issues": ("同步问题", "Sync issues"),
    "key.register": ("新患者", "New patient"),
    "key.issue_card": ("发卡", "Issue card"),
    "key.top_up": ("充值", "Top up"),
    "key.search": ("查找", "Find"),
    "key.save": ("保存", "Save"),
    "key.confirm": ("确认", "Confirm"),
    "key.resolve": ("标记已处理", "Mark handled"),
    "key.show_resolved": ("显示已处理", "Show handled"),
    "key.close": ("关闭", "Close"),
    "cmd.language": ("切换语言 / Switch language", "Switch language / 切换语言"),
    "cmd.language.help": (
        "在简体中文和英文之间切换",
        "Switch between Simplified Chinese and English",
    ),
    "cmd.quit.help": ("退出工作站程序", "Quit the workstation"),
    # status bar
    "status.online": ("● 在线", "● Online"),
    "status.offline": ("○ 离线", "○ Offline"),
    "status.connecting": ("… 连接中", "… Connecting"),
    "status.no_session": ("◐ 未登录服务器", "◐ No server session"),
    "status.net_cut": ("○ 离线(演示断网)", "○ Offline (demo cut)"),
    "status.pending": ("待同步 {count}", "Pending {count}"),
    "status.oldest": ("最早 {age}", "oldest {age}"),
    "status.last_sync": ("上次同步 {time}", "Last sync {time}"),
    "status.never": ("尚未同步", "never synced"),
    "status.issues": ("同步问题 {count}", "Sync issues {count}"),
    "status.skew": ("本机时钟偏差 {seconds} 秒！", "Clock off by {seconds} s!"),
    "status.bootstrap_login": (
        "◌ 患者数据将在操作员登录后下载",
        "◌ The patient data loads once a clerk logs in",
    ),
    "status.bootstrap_wait": (
        "◌ 患者数据尚未下载，稍后自动重试",
        "◌ Patient data not loaded yet; retrying shortly",
    ),
    "status.bootstrap_preparing": (
        "◌ 中心服务器正在准备患者数据（已等 {seconds} 秒）",
        "◌ The server is preparing the patient data ({seconds} s so far)",
    ),
    "status.bootstrap_download": ("⇣ 正在下载患者数据", "⇣ Loading patient data"),
    "status.bootstrap_unpack": ("⇣ 正在解压患者数据", "⇣ Unpacking patient data"),
    "status.bootstrap_install": ("⇣ 正在装入患者数据", "⇣ Installing patient data"),
    "status.time_left": ("约剩 {time}", "about {time} left"),
    "dur.seconds": ("{n} 秒", "{n} s"),
    "dur.minutes": ("{n} 分钟", "{n} min"),
    "dur.hours": ("{n} 小时", "{n} h"),
    "status.clerk": ("{name}（{roles}）", "{name} ({roles})"),
    "status.offline_login": ("离线登录", "offline login"),
    "age.seconds": ("{n}秒前", "{n}s ago"),
    "age.minutes": ("{n}分钟前", "{n} min ago"),
    "age.hours": ("{n}小时前", "{n} h ago"),
    "age.days": ("{n}天前", "{n} d ago"),
    # login
    "login.title": ("操作员登录", "Clerk login"),
    "login.username": ("用户名", "Username"),
    "login.password": ("密码", "Password"),
    "login.hint": (
        "输入用户名和密码后按 Enter。F9 切换语言。",
        "Type username and password, then Enter. F9 switches language.",
    ),
    "login.working": ("正在登录…", "Logging in…"),
    "login.offline_ok": (
        "中心服务器不可达，已离线登录。工作照常进行，恢复联网后自动同步。",
        "Central server unreachable: logged in offline. Work continues and syncs when the network is back.",
    ),
    "demo.title": ("演示环境", "Demo"),
    "demo.users": (
        "演示账号（用户名 / 密码 / 岗位）：",
        "Demo accounts (username / password / roles):",
    ),
    "demo.secrets": ("设备凭证保存在：{where}", "Device token kept in: {where}"),
    "demo.network": (
        "F12 断开/恢复本机与中心服务器的网络，体验离线工作。",
        "F12 cuts/restores this workstation's network to show offline work.",
    ),
    # home
    "home.title": ("请选择工作", "Choose your desk"),
    "home.welcome": ("{name}，您好。", "Hello, {name}."),
    "home.not_yet": ("（后续版本提供）", "(in a later release)"),
    "home.not_allowed": ("您的岗位不能使用：{desk}", "Your roles do not include: {desk}"),
    "home.not_available": ("{desk} 将在后续版本提供。", "{desk} comes in a later release."),
    "home.no_desk": (
        "您的岗位（系统管理员）不处理收费和患者数据，本工作站没有您的工作。\n"
        "操作员和工作站在中心服务器上管理：workstation admin --help",
        "Your role (administrator) handles no money and no patient data: there is no desk "
        "for you here.\nClerks and workstations are managed at the central server: "
        "workstation admin --help",
    ),
    # cashier
    "cashier.title": ("收费窗口", "Cashier desk"),
    "cashier.search": (
        "查找患者：姓名 / 拼音首字母(zsf) / 身份证号 / 手机号 / 卡号；刷卡或读身份证直接打开",
        "Find patient: name / pinyin initials (zsf) / ID no. / phone / card no.; swipe a card or read an ID card to open",
    ),
    "cashier.stock": (
        "本机号段余：卡号 {cards}，收据号 {receipts}",
        "Left in this workstation's blocks: {cards} card numbers, {receipts} receipt numbers",
    ),
    "cashier.no_patient": (
        "尚未选择患者。查找患者，或按 F2 登记新患者。",
        "No patient selected. Search, or press F2 to register a new patient.",
    ),
    "cashier.no_results": (
        "没有找到。按 F2 登记新患者。",
        "Nothing found. Press F2 to register a new patient.",
    ),
    "cashier.results": ("找到 {count} 位", "{count} found"),
    "cashier.results_more": (
        "显示前 {count} 位，还有更多：请多输入几个字缩小范围",
        "Showing the first {count}; there are more: type more to narrow it down",
    ),
    "cashier.loading": (
        "患者数据仍在下载，暂时查不到。请稍候，不要重复登记。",
        "The patient data is still loading, so nothing can be found yet. Please wait; "
        "do not register the patient again.",
    ),
    "col.name": ("姓名", "Name"),
    "col.sex": ("性别", "Sex"),
    "col.birth": ("出生日期", "Born"),
    "col.doc": ("证件号码", "Document no."),
    "col.phone": ("电话", "Phone"),
    "col.card": ("卡号", "Card"),
    "col.state": ("状态", "State"),
    "col.time": ("时间", "Time"),
    "col.kind": ("类别", "Kind"),
    "col.amount": ("金额", "Amount"),
    "col.method": ("方式", "Method"),
    "col.receipt": ("收据号", "Receipt"),
    "col.operation": ("操作", "Operation"),
    "col.problem": ("问题", "Problem"),
    "col.detail": ("内容", "Details"),
    "patient.provisional": ("临时档案（待中心确认）", "Provisional (awaiting the central server)"),
    "patient.confirmed": ("已确认", "Confirmed"),
    "patient.balance": ("预存余额", "Deposit balance"),
    "patient.confirmed_balance": ("其中中心已确认", "of which confirmed by the server"),
    "patient.cards": ("就诊卡", "Cards"),
    "patient.no_card": ("无在用卡，按 F3 发卡", "No active card: F3 issues one"),
    "patient.recent": ("最近缴款", "Recent payments"),
    "patient.address": ("地址", "Address"),
    "patient.pending_mark": ("待同步", "pending"),
    "need.patient": ("请先选择患者。", "Select a patient first."),
    "need.card": (
        "该患者没有在用的卡，请先发卡（F3）。",
        "This patient has no active card: issue one first (F3).",
    ),
    # forms
    "form.register.title": ("登记新患者", "Register a new patient"),
    "form.doc_type": ("证件类型", "Document type"),
    "form.doc_no": ("证件号码", "Document number"),
    "form.name": ("姓名", "Name"),
    "form.sex": ("性别", "Sex"),
    "form.birth_date": ("出生日期（年-月-日）", "Birth date (year-month-day)"),
    "form.birth_date.auto": ("由身份证号自动填写", "Filled from the ID number"),
    "form.phone": ("联系电话", "Phone"),
    "form.address": ("地址", "Address"),
    "form.hint": ("F10 保存，Esc 取消。", "F10 saves, Esc cancels."),
    "form.working": ("正在保存…", "Saving…"),
    "form.issue.title": ("发卡", "Issue a card"),
    "form.issue.patient": ("患者：{name}（{doc}）", "Patient: {name} ({doc})"),
    "form.issue.card_no": (
        "卡号（本机号段自动分配）：{card_no}",
        "Card number (from this workstation's block): {card_no}",
    ),
    "form.issue.amount": (
        "首次预存金额（元，可不填；至少 {minimum}）",
        "First prepayment in yuan (optional; at least {minimum})",
    ),
    "form.method": ("支付方式", "Payment method"),
    "form.topup.title": ("预存充值", "Top up deposit"),
    "form.topup.card": ("卡号（可刷卡）", "Card number (swipe or type)"),
    "form.topup.amount": ("充值金额（元）", "Amount in yuan"),
    "form.topup.balance": ("当前余额：¥{balance}", "Current balance: ¥{balance}"),
    "confirm.title": ("请核对", "Please confirm"),
    "confirm.topup": (
        "向 {name}（卡 {card_no}）预存 ¥{amount}，{method}。",
        "Top up ¥{amount} by {method} for {name} (card {card_no}).",
    ),
    "confirm.issue": (
        "为 {name} 发卡 {card_no}，首次预存 ¥{amount}，{method}。",
        "Issue card {card_no} to {name} with a first prepayment of ¥{amount} by {method}.",
    ),
    "confirm.issue_no_money": (
        "为 {name} 发卡 {card_no}，不预存。",
        "Issue card {card_no} to {name}, no prepayment.",
    ),
    "confirm.hint": ("Enter 确认，Esc 返回修改。", "Enter confirms, Esc goes back."),
    # results
    "done.registered": ("已登记 {name}。", "{name} registered."),
    "done.mapped": (
        "该证件号已登记为 {name}，已打开原档案。",
        "That document is already registered to {name}; opened the existing record.",
    ),
    "done.card": ("已发卡 {card_no}。", "Card {card_no} issued."),
    "done.top_up": ("已充值，收据 {receipt_no}。", "Topped up; receipt {receipt_no}."),
    "done.offline_note": (
        "（离线办理，恢复联网后自动同步）",
        "(done offline; it syncs when the network is back)",
    ),
    "done.refused": (
        "中心服务器拒绝了该操作：{reason}（已列入同步问题）",
        "The central server refused this: {reason} (listed in Sync issues)",
    ),
    "receipt.title": ("收据", "Receipt"),
    "receipt.saved": ("可打印文件：{path}", "Printable file: {path}"),
    "receipt.provisional": (
        "临时收据：尚未与中心服务器确认",
        "Provisional receipt: not yet confirmed by the central server",
    ),
    "receipt.final": ("中心服务器已确认", "Confirmed by the central server"),
    # sync issues
    "issues.title": ("同步问题", "Sync issues"),
    "issues.arrived": (
        "中心服务器未接受部分操作：同步问题 {count} 项待处理，按 F8 查看。",
        "The central server did not accept some operations: {count} open sync issues, press F8.",
    ),
    "issues.none": ("没有待处理的同步问题。", "No open sync issues."),
    "issues.help": (
        "以下操作中心服务器未按本机办理的样子接受，需要处理（例如退还已收现金、重新发卡）。处理后按 F10 标记。",
        "The central server did not take these operations as they were done here. Act on each "
        "(e.g. return cash taken, issue another card), then press F10 to mark it handled.",
    ),
    "issues.note": ("处理说明", "What was done"),
    "issues.resolved": ("已标记为已处理。", "Marked as handled."),
    "issues.kind.rejected": ("被拒绝", "Refused"),
    "issues.kind.modified": ("被调整", "Changed"),
    "issues.kind.flagged": ("已记账，待核对", "Booked, flagged"),
    "issues.kind.needs_review": ("待主管审核", "Awaiting review"),
    "issues.kind.replay_conflict": ("可能被拒绝", "Likely refused"),
    "issues.kind.stuck": ("同步停滞", "Sync stuck"),
    "issues.kind.server_restored": ("服务器已恢复", "Server restored"),
    "issues.state.open": ("待处理", "Open"),
    "issues.state.resolved": ("已处理", "Handled"),
    # errors
    "error.unexpected": (
        "出错了：{error}。本次操作未保存，请重试；如反复出现请联系信息科。",
        "Something went wrong: {error}. Nothing was saved; try again, and call IT if it repeats.",
    ),
}


def default_language(environ: dict[str, str] | None = None) -> str:
    """zh if the locale says Chinese (LANGUAGE, LC_ALL, LC_MESSAGES, LANG), else en."""
    env = environ if environ is not None else dict(os.environ)
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    if environ is None:
        try:
            code = locale.getlocale()[0] or ""
        except ValueError:
            code = ""
        if code.lower().startswith("zh"):
            return "zh"
    return "en"


class I18n:
    def __init__(self, language: str = "zh") -> None:
        self.language = language if language in LANGUAGES else "zh"
        self._listeners: list[Callable[[str], None]] = []

    @property
    def en(self) -> bool:
        return self.language == "en"

    def t(self, key: str, **params: object) -> str:
        pair = CATALOG.get(key)
        if pair is None:
            return key
        text = pair[1] if self.en else pair[0]
        return text.format(**params) if params else text

    def pick(self, pair: tuple[str, str]) -> str:
        return pair[1] if self.en else pair[0]

    def toggle(self) -> str:
        self.language = "en" if self.language == "zh" else "zh"
        return self.language

    def rejection(self, rejection: Rejection) -> str:
        return rejection.message(self.language)

    # names of domain things
    def sex(self, code: str) -> str:
        return self.pick(SEX_NAMES.get(code, (code, code)))

    def document(self, doc_type: str) -> str:
        try:
            return self.pick(DOCUMENT_NAMES[DocumentType(doc_type)])
        except ValueError:
            return doc_type

    def method(self, method: str) -> str:
        try:
            return self.pick(PAYMENT_METHOD_NAMES[PaymentMethod(method)])
        except ValueError:
            return method

    def card_status(self, status: str) -> str:
        try:
            return self.pick(CardStatus(status).names)
        except ValueError:
            return status

    def transfer_kind(self, kind: str) -> str:
        try:
            return self.pick(TransferKind(kind).names)
        except ValueError:
            return kind

    def command(self, kind: str) -> str:
        command = COMMANDS.get(kind)
        return self.pick(command.names) if command else kind

    def roles(self, roles: Iterable[str]) -> str:
        separator = ", " if self.en else "、"
        return separator.join(self.pick(ROLE_NAMES.get(r, (r, r))) for r in sorted(roles))

    def duration(self, seconds: float) -> str:
        n = int(max(seconds, 0) + 0.5)
        if n < 60:
            return self.t("dur.seconds", n=n)
        if n < 3600:
            return self.t("dur.minutes", n=round(n / 60))
        return self.t("dur.hours", n=round(n / 3600))

    def age(self, seconds: float) -> str:
        n = int(max(seconds, 0))
        if n < 60:
            return self.t("age.seconds", n=n)
        if n < 3600:
            return self.t("age.minutes", n=n // 60)
        if n < 86400:
            return self.t("age.hours", n=n // 3600)
        return self.t("age.days", n=n // 86400)
