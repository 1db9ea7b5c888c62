"""policy.accounts: names and ids of users and groups, the one lookup every layer uses."""

from __future__ import annotations

import pytest

from outguard.policy import accounts

MISSING = "no-such-user-og-accounts"


def test_names_and_numbers() -> None:
    assert accounts.uid("root") == 0 and accounts.uid(4321) == 4321
    assert accounts.gid("root") == 0 and accounts.gid(4321) == 4321
    with pytest.raises(KeyError):
        accounts.uid(MISSING)
    with pytest.raises(KeyError):
        accounts.gid(MISSING)


def test_user_ids_of_a_uid_without_an_entry_is_the_uid_itself() -> None:
    assert accounts.user_ids("root") == (0, 0)
    assert accounts.user_ids(3_999_999_999) == (3_999_999_999, 3_999_999_999)
    assert accounts.user_ids(MISSING) is None
    assert not accounts.has_user(3_999_999_999) and accounts.has_user(0)


def test_reverse_lookup_and_names() -> None:
    assert accounts.user_name(0) == "root"
    assert accounts.user_name(3_999_999_999) is None
    assert "root" in set(accounts.user_names()) and "root" in set(accounts.group_names())
