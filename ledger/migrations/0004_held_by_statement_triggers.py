"""PostgreSQL: move `held` upkeep from row triggers to statement triggers.

A dispatch inserts hundreds of holds in one INSERT (`holds_place_batch`); with a row
trigger each hold updated the account row once, so one dispatch wrote hundreds of row
versions of the same account. Statement-level AFTER triggers with transition tables add
(or take back) the statement's total per account in ONE update. The rules are unchanged:
the row trigger `ledger_hold_guard` still refuses deletes, non-PENDING inserts, changes to
resolved holds and to anything but a pending hold's resolution; `held` still equals the
sum of pending holds after every statement, and the CHECK `posted >= held` is checked on
that one update. SQLite keeps the row triggers of 0003 (it has no statement triggers).
"""

from django.db import migrations

POSTGRES_FORWARD = r"""
CREATE OR REPLACE FUNCTION ledger_hold_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger: holds are never deleted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'PENDING' THEN
            RAISE EXCEPTION 'ledger: a hold starts PENDING'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.state <> 'PENDING' THEN
        RAISE EXCEPTION 'ledger: hold % is already %; a hold resolves once', OLD.id, OLD.state
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.account_id <> OLD.account_id OR NEW.amount <> OLD.amount
       OR NEW.reference <> OLD.reference OR NEW.idempotency_key <> OLD.idempotency_key
       OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'ledger: only the resolution of hold % may change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ledger_holds_placed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_account AS account SET held = account.held + placed.total
    FROM (SELECT account_id, sum(amount) AS total FROM placed_holds GROUP BY account_id) AS placed
    WHERE account.id = placed.account_id;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_holds_placed AFTER INSERT ON ledger_hold
    REFERENCING NEW TABLE AS placed_holds
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_holds_placed();

CREATE OR REPLACE FUNCTION ledger_holds_resolved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_account AS account SET held = account.held - resolved.total
    FROM (
        SELECT old_holds.account_id, sum(old_holds.amount) AS total
        FROM old_holds JOIN new_holds ON new_holds.id = old_holds.id
        WHERE old_holds.state = 'PENDING' AND new_holds.state <> 'PENDING'
        GROUP BY old_holds.account_id
    ) AS resolved
    WHERE account.id = resolved.account_id;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_holds_resolved AFTER UPDATE ON ledger_hold
    REFERENCING OLD TABLE AS old_holds NEW TABLE AS new_holds
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_holds_resolved();
"""

POSTGRES_BACKWARD = r"""
DROP TRIGGER IF EXISTS ledger_holds_resolved ON ledger_hold;
DROP TRIGGER IF EXISTS ledger_holds_placed ON ledger_hold;
DROP FUNCTION IF EXISTS ledger_holds_resolved();
DROP FUNCTION IF EXISTS ledger_holds_placed();
CREATE OR REPLACE FUNCTION ledger_hold_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger: holds are never deleted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'PENDING' THEN
            RAISE EXCEPTION 'ledger: a hold starts PENDING'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        UPDATE ledger_account SET held = held + NEW.amount WHERE id = NEW.account_id;
        RETURN NEW;
    END IF;
    IF OLD.state <> 'PENDING' THEN
        RAISE EXCEPTION 'ledger: hold % is already %; a hold resolves once', OLD.id, OLD.state
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.id <> OLD.id OR NEW.account_id <> OLD.account_id OR NEW.amount <> OLD.amount
       OR NEW.reference <> OLD.reference OR NEW.idempotency_key <> OLD.idempotency_key
       OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'ledger: only the resolution of hold % may change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.state <> 'PENDING' THEN
        UPDATE ledger_account SET held = held - OLD.amount WHERE id = OLD.account_id;
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
        ("ledger", "0003_ledger_invariant_triggers"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
