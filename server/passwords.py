"""Which passwords a clerk may be given (``create-clerk``, ``reset-password``).

At least :data:`MIN_LENGTH` characters, not the username, and not one of the
passwords guessed first (:data:`COMMON_PASSWORDS`: the most common in leaked
password lists, those of Chinese sites included, and keyboard and digit
runs). The lockout (``server.auth``) allows a handful of guesses a
workstation; these rules keep those guesses from being the right ones.
"""

from __future__ import annotations

MIN_LENGTH = 8

# compared in lower case
COMMON_PASSWORDS: frozenset[str] = frozenset(
    {
        # digits
        "12345678", "123456789", "1234567890", "0123456789", "87654321", "987654321",
        "11111111", "00000000", "88888888", "66666666", "99999999", "12341234",
        "11223344", "12344321", "123123123", "147258369", "123456123", "1234567a",
        "11112222", "12121212", "13141314", "52013141", "5201314520", "77777777",
        "22222222", "55555555", "31415926", "11235813", "147852369", "159357456",
        # words and their digit tails
        "password", "password1", "password123", "passw0rd", "p@ssw0rd", "p@ssword",
        "admin123", "admin1234", "admin888", "administrator", "root1234", "test1234",
        "qwerty123", "qwertyui", "qwerty12", "1qaz2wsx", "1q2w3e4r", "1q2w3e4r5t",
        "zaq12wsx", "qazwsxedc", "asdfghjk", "asdf1234", "zxcvbnm1", "abcd1234",
        "abc12345", "abc123456", "a1234567", "a12345678", "aa123456", "a1b2c3d4",
        "aaaaaaaa", "iloveyou", "iloveyou1", "sunshine", "princess", "football",
        "baseball", "welcome1", "welcome123", "letmein1", "trustno1", "superman",
        "starwars", "master12", "changeme", "computer", "internet", "whatever",
        "q1w2e3r4", "qwer1234", "1234qwer", "12qwaszx", "asd12345", "zxc12345",
        # pinyin, and what Chinese sites see most
        "woaini1314", "woaini520", "woaini123", "woaini521", "iloveyou520",
        "wangyang", "zhangwei", "wang1234", "li123456", "zhang123", "nihao123",
        "yiliao123", "yiyuan123", "hospital", "hospital1", "shoufei123", "woshishui",
        "qq123456", "qq5201314", "aini1314", "5201314a", "a5201314", "taobao123",
        "baidu123", "88888888a", "a88888888", "zhongguo", "beijing1", "shanghai",
        # this product's own words
        "cashier1", "cashier123", "supervisor", "registrar", "admission",
    }
)  # fmt: skip


class PasswordRefused(ValueError):
    """A password the rules refuse; says why in both languages."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(f"{en} / {zh}")
        self.zh, self.en = zh, en


def check_password(password: str, username: str = "") -> None:
    """Raise :class:`PasswordRefused` unless ``password`` may be a clerk's."""
    if len(password) < MIN_LENGTH:
        raise PasswordRefused(
            f"密码至少需要 {MIN_LENGTH} 个字符。",
            f"A password needs at least {MIN_LENGTH} characters.",
        )
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS:
        raise PasswordRefused(
            "这是最常见的密码之一，最先被猜到，请换一个。",
            "This is one of the most common passwords, the first to be guessed; choose another.",
        )
    if username and username.lower() in lowered:
        raise PasswordRefused("密码不能包含用户名。", "A password must not contain the username.")
