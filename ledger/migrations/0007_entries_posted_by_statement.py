"""PostgreSQL: move `posted` upkeep from the entry row trigger to a statement trigger.

A window's confirmations insert hundreds of entries in one INSERT (`ledger.batches`). With
the row trigger of 0003 each entry updated the account row once, so one batch wrote
hundreds of versions of one row inside one transaction, each UPDATE walking the chain of
versions the ones before it left (the INSERT grew with the square of the batch). Now:

- the row trigger `ledger_entry_post` still checks a capture against its hold and stamps
  or checks `balance_after`, now from the account's latest entry (`balance_after` IS the
  running balance, so the latest entry's is `posted`; earlier rows of the same statement
  are visible to a row trigger): one index probe per entry, no write;
- a statement-level AFTER trigger adds the statement's total per account to `posted` in
  ONE update (the CHECK `posted >= held` is checked on it, so an overdraft anywhere in the
  statement refuses the statement), then checks that `posted` equals the latest entry's
  `balance_after`, so the two can never drift apart.

The rules are unchanged: `posted` equals the sum of the entries after every statement,
every entry carries the running balance, and nothing else may change `posted`. SQLite
keeps the row triggers of 0003 (it has no statement triggers).
"""

from django.db import migrations

POSTGRES_FORWARD = r"""
CREATE OR REPLACE FUNCTION ledger_entry_post() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    running bigint;
    hold_state text;
    hold_captured bigint;
BEGIN
    IF NEW.kind = 'CAPTURE' THEN
        SELECT state, captured_amount INTO hold_state, hold_captured
            FROM ledger_hold WHERE id = NEW.hold_id AND account_id = NEW.account_id;
        IF hold_state IS DISTINCT FROM 'CAPTURED' OR hold_captured IS DISTINCT FROM -NEW.amount THEN
            RAISE EXCEPTION 'ledger: a capture entry needs its hold CAPTURED for the same amount'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    ELSIF NEW.hold_id IS NOT NULL THEN
        RAISE EXCEPTION 'ledger: only a capture entry names a hold'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT balance_after INTO running FROM ledger_entry
        WHERE account_id = NEW.account_id ORDER BY id DESC LIMIT 1;
    running := COALESCE(running, 0) + NEW.amount;
    IF NEW.balance_after IS NULL THEN
        NEW.balance_after := running;
    ELSIF NEW.balance_after <> running THEN
        RAISE EXCEPTION 'ledger: entry balance_after % is not the posted balance %', NEW.balance_after, running
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ledger_entries_posted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    drifted bigint;
BEGIN
    UPDATE ledger_account AS account SET posted = account.posted + posted_now.total
    FROM (SELECT account_id, sum(amount) AS total FROM posted_entries GROUP BY account_id) AS posted_now
    WHERE account.id = posted_now.account_id;
    SELECT account.id INTO drifted
    FROM ledger_account AS account
    WHERE account.id IN (SELECT account_id FROM posted_entries)
      AND account.posted <> (
          SELECT entry.balance_after FROM ledger_entry AS entry
          WHERE entry.account_id = account.id ORDER BY entry.id DESC LIMIT 1
      )
    LIMIT 1;
    IF drifted IS NOT NULL THEN
        RAISE EXCEPTION 'ledger: account % posted is not its latest entry''s balance_after', drifted
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_entries_posted AFTER INSERT ON ledger_entry
    REFERENCING NEW TABLE AS posted_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_posted();
"""

POSTGRES_BACKWARD = r"""
DROP TRIGGER IF EXISTS ledger_entries_posted ON ledger_entry;
DROP FUNCTION IF EXISTS ledger_entries_posted();
CREATE OR REPLACE FUNCTION ledger_entry_post() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_posted bigint;
    hold_state text;
    hold_captured bigint;
BEGIN
    IF NEW.kind = 'CAPTURE' THEN
        SELECT state, captured_amount INTO hold_state, hold_captured
            FROM ledger_hold WHERE id = NEW.hold_id AND account_id = NEW.account_id;
        IF hold_state IS DISTINCT FROM 'CAPTURED' OR hold_captured IS DISTINCT FROM -NEW.amount THEN
            RAISE EXCEPTION 'ledger: a capture entry needs its hold CAPTURED for the same amount'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    ELSIF NEW.hold_id IS NOT NULL THEN
        RAISE EXCEPTION 'ledger: only a capture entry names a hold'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    UPDATE ledger_account SET posted = posted + NEW.amount
        WHERE id = NEW.account_id RETURNING posted INTO new_posted;
    IF NEW.balance_after IS NULL THEN
        NEW.balance_after := new_posted;
    ELSIF NEW.balance_after <> new_posted THEN
        RAISE EXCEPTION 'ledger: entry balance_after % is not the posted balance %', NEW.balance_after, new_posted
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
"""


def forward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD, params=None)


def backward(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0006_d_doors_payment_reference_once"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
