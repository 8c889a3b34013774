"""A Postgres connection string is read as PostHog's source form reads it (its
`parsers/postgres.ts`), and one that cannot be read is answered with what to fix, never with the
string or a part of it."""

from __future__ import annotations

import pytest

from posthog_warehouse_mcp.sandbox.connection_strings import (
    ConnectionStringError,
    fill_in,
    parse_postgres,
)

LABELS = {"host": "Host", "port": "Port", "database": "Database", "user": "User"}
LABELS["password"] = "Password"


def test_a_full_url_gives_each_field() -> None:
    assert parse_postgres("postgres://alice:s3cret@db.example.com:6543/analytics") == {
        "host": "db.example.com",
        "port": "6543",
        "database": "analytics",
        "user": "alice",
        "password": "s3cret",
    }


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("postgresql://alice:pw@db.example.com/analytics", "host", "db.example.com"),
        ("postgresql://alice:pw@DB.Example.com/analytics", "host", "db.example.com"),
        ("postgresql://alice:pw@10.1.2.3:5433/analytics", "host", "10.1.2.3"),
        ("postgresql://alice:pw@[2001:db8::1]:5433/analytics", "host", "2001:db8::1"),
        (
            "postgresql://alice:pw@%2Fvar%2Frun%2Fpostgresql/analytics",
            "host",
            "/var/run/postgresql",
        ),
        ("postgresql://alice:pw@db:5433/analytics", "port", "5433"),
        ("postgresql://alice:pw@db/my%20db", "database", "my db"),
        ("postgresql://alice:pw@db/Analytics", "database", "Analytics"),
        ("postgresql://al%40ice:pw@db/analytics", "user", "al@ice"),
        ("postgresql://alice:pw@db/analytics", "password", "pw"),
        # PostHog reads these query parameters in place of the URL's own parts.
        ("postgresql://alice:pw@db/analytics?user=bob", "user", "bob"),
        ("postgresql://alice:pw@db/analytics?password=other", "password", "other"),
        (
            "postgresql://alice:pw@db/analytics?host=replica.example.com",
            "host",
            "replica.example.com",
        ),
        ("postgresql://alice:pw@db:5433/analytics?port=6432", "port", "6432"),
        ("POSTGRESQL://alice:pw@db/analytics", "user", "alice"),
        ("  postgresql://alice:pw@db/analytics\n", "database", "analytics"),
    ],
)
def test_each_part_is_read_where_postgres_puts_it(text: str, field: str, value: str) -> None:
    assert parse_postgres(text)[field] == value


@pytest.mark.parametrize(
    ("encoded", "password"),
    [
        ("p%40ss%2Fword%3A%21", "p@ss/word:!"),
        ("a%23b%3Fc%25d", "a#b?c%d"),
        ("%C3%A9t%C3%A9", "été"),
        ("with%20space", "with space"),
        ("plus+sign", "plus+sign"),
        ("100%", "100%"),  # a % that starts no escape is itself, as in PostHog's parser
        ("un@escaped", "un@escaped"),  # the last @ ends the password, as in a browser's URL
    ],
)
def test_a_percent_encoded_password_is_decoded(encoded: str, password: str) -> None:
    parsed = parse_postgres(f"postgresql://alice:{encoded}@db.example.com:5432/analytics")
    assert (parsed["password"], parsed["host"], parsed["user"]) == (
        password,
        "db.example.com",
        "alice",
    )


def test_sslmode_and_other_parameters_fill_no_field() -> None:
    parsed = parse_postgres(
        "postgresql://alice:pw@db.example.com/analytics"
        "?sslmode=require&options=endpoint%3Dep-1&application_name=x"
    )
    assert parsed == {
        "host": "db.example.com",
        "database": "analytics",
        "user": "alice",
        "password": "pw",
    }


def test_a_string_without_port_or_password_gives_neither() -> None:
    assert parse_postgres("postgresql://alice@db.example.com/analytics") == {
        "host": "db.example.com",
        "database": "analytics",
        "user": "alice",
    }


# Every user, password, host and database below starts with "zq": no message may repeat one.
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mysql://zqroot:zqpw@zqdb/zqsales", "must start with postgresql:// or postgres://"),
        ("zqdb.example.com:5432/zqanalytics", "must start with postgresql:// or postgres://"),
        ("postgresql://", "must start with postgresql:// or postgres://"),
        ("host=zqdb dbname=zqanalytics user=zqalice", "of the form host=... dbname=... are not"),
        ("jdbc:postgresql://zqdb:5432/zqanalytics", "remove the jdbc: prefix"),
        ("postgresql://zqalice:zqpw@/zqanalytics", "names no host"),
        ("postgresql://zqalice:zqpw@zqdb.example.com/", "names no database"),
        ("postgresql://zqalice:zqpw@zqdb.example.com", "names no database"),
        ("postgresql://zqdb.example.com/zqanalytics", "names no user"),
        ("postgresql://:zqpw@zqdb.example.com/zqanalytics", "names no user"),
        ("postgresql://zqalice:zqpw@zqdb:port/zqanalytics", "must be a number from 1 to 65535"),
        ("postgresql://zqalice:zqpw@zqdb:70000/zqanalytics", "must be a number from 1 to 65535"),
        ("postgresql://zqalice:zqpw@zqdb:0/zqanalytics", "must be a number from 1 to 65535"),
        ("postgresql://zqalice:zqpw@zqdb/zqanalytics?port=x", "must be a number from 1 to 65535"),
        # A / in a password that is not encoded ends the host early.
        ("postgresql://zqalice:zqpa/ss@zqdb/zqanalytics", "write those as %40, %3A, %2F"),
        ("postgresql://zqalice:zqpa#ss@zqdb/zqanalytics", "write it as %23"),
        ("postgresql://zqalice:zqpw@zqdb1:5432,zqdb2:5432/zqanalytics", "more than one host"),
        ("postgresql://zqalice:zqpw@[::1/zqanalytics", "could not be read as a URL"),
        ("postgresql://zqalice:zq%FF@zqdb/zqanalytics", "is not UTF-8 text"),
    ],
)
def test_a_string_that_cannot_be_read_says_what_to_fix_without_repeating_it(
    text: str, says: str
) -> None:
    with pytest.raises(ConnectionStringError) as raised:
        parse_postgres(text)
    assert says in str(raised.value)
    assert "zq" not in str(raised.value)


def test_the_string_fills_the_empty_fields_and_is_left_out() -> None:
    form = {
        "connection_string": "postgresql://alice:s3cret@db.example.com/analytics",
        "schema": "billing",
    }
    assert fill_in("Postgres", form, LABELS) == {
        "host": "db.example.com",
        "port": "5432",  # PostHog's default when the string has none
        "database": "analytics",
        "user": "alice",
        "password": "s3cret",
        "schema": "billing",
    }


def test_a_typed_field_adds_what_the_string_lacks() -> None:
    form = {
        "connection_string": "postgresql://alice@db.example.com/analytics",
        "port": "6543",
        "password": "typed",
    }
    filled = fill_in("Postgres", form, LABELS)
    assert (filled["port"], filled["password"], filled["host"]) == (
        "6543",
        "typed",
        "db.example.com",
    )


def test_a_typed_field_that_agrees_with_the_string_is_fine() -> None:
    form = {"connection_string": "postgresql://alice:pw@db:5433/analytics", "port": "5433"}
    assert fill_in("Postgres", form, LABELS)["port"] == "5433"


def test_a_typed_field_that_differs_from_the_string_is_refused_by_name() -> None:
    form = {
        "connection_string": "postgresql://alice:from-string@db.example.com:5433/analytics",
        "host": "other.example.com",
        "password": "typed-secret",
    }
    with pytest.raises(ConnectionStringError) as raised:
        fill_in("Postgres", form, LABELS)
    message = str(raised.value)
    assert "the Host and Password fields you typed differ" in message
    assert not any(v in message for v in ("from-string", "typed-secret", "other.example.com"))


def test_without_a_string_or_a_reader_the_fields_are_kept_as_typed() -> None:
    form = {"host": "db", "port": "3306", "connection_string": "  "}
    assert fill_in("Postgres", form, LABELS) == {"host": "db", "port": "3306"}
    mysql = {"host": "db", "connection_string": "mysql://a:b@c/d"}
    assert fill_in("MySQL", mysql, LABELS) == {"host": "db"}


def test_a_bad_string_is_refused_even_with_every_field_typed() -> None:
    form = {
        "connection_string": "postgres://nobody@/x",
        "host": "db",
        "port": "5432",
        "database": "x",
        "user": "alice",
        "password": "pw",
    }
    with pytest.raises(ConnectionStringError, match="names no host"):
        fill_in("Postgres", form, LABELS)
