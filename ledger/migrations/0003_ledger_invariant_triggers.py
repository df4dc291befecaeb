"""Database triggers behind the ledger's invariants, so that even raw SQL cannot break them.

PostgreSQL (production, tests):
- `posted` is maintained by the database: inserting an entry adds its amount to the
  account's `posted` and stamps the entry's `balance_after` (the running balance).
- `held` likewise: inserting a (PENDING) hold adds its amount to `held`; resolving it
  (CAPTURED, RELEASED, EXPIRED) takes it back out.
- Any other change to `posted` or `held` is refused, so posted == sum(entries) and
  held == sum(pending holds) hold by construction; an account starts at 0/0.
- Entries are immutable (no UPDATE, no DELETE). Holds are never deleted; a resolved hold
  is immutable, so a hold resolves exactly once; a pending hold may change only its
  resolution (and expiry).
- A capture entry needs its hold CAPTURED for the same amount (immediate), and a CAPTURED
  hold needs its capture entry by commit time (deferred constraint trigger).
- `available = posted - held >= 0` is the CHECK constraint `account_available_non_negative`.

SQLite (the `make run` default) gets the same balance-maintaining and immutability
triggers in SQLite's dialect, but not the guard against direct writes to posted/held
(SQLite cannot tell a trigger's write from a client's). NOTE: SQLite rebuilds a table on
most ALTERs and drops its triggers with it: a later migration that alters these tables on
SQLite must re-create them (call `sqlite_create` again).

Errors use SQLSTATE class 23 (integrity_constraint_violation), so Django raises
IntegrityError for every refusal.
"""

from django.db import migrations

POSTGRES_CREATE = r"""
CREATE OR REPLACE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.posted <> 0 OR NEW.held <> 0 THEN
            RAISE EXCEPTION 'ledger: an account opens at posted 0, held 0; money arrives as entries'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    ELSIF (NEW.posted IS DISTINCT FROM OLD.posted OR NEW.held IS DISTINCT FROM OLD.held)
          AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'ledger: posted and held of account % change only through entries and holds', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_account_guard BEFORE INSERT OR UPDATE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_guard();

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

CREATE TRIGGER ledger_entry_post BEFORE INSERT ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_post();

CREATE OR REPLACE FUNCTION ledger_entry_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger: entries are immutable; correct a mistake with a new entry'
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TRIGGER ledger_entry_immutable BEFORE UPDATE OR DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_immutable();

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

CREATE TRIGGER ledger_hold_guard BEFORE INSERT OR UPDATE OR DELETE ON ledger_hold
    FOR EACH ROW EXECUTE FUNCTION ledger_hold_guard();

CREATE OR REPLACE FUNCTION ledger_hold_capture_has_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM ledger_entry
        WHERE hold_id = NEW.id AND kind = 'CAPTURE' AND amount = -NEW.captured_amount
    ) THEN
        RAISE EXCEPTION 'ledger: captured hold % has no capture entry', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_hold_capture_has_entry AFTER UPDATE ON ledger_hold
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.state = 'CAPTURED')
    EXECUTE FUNCTION ledger_hold_capture_has_entry();
"""

POSTGRES_DROP = r"""
DROP TRIGGER IF EXISTS ledger_hold_capture_has_entry ON ledger_hold;
DROP TRIGGER IF EXISTS ledger_hold_guard ON ledger_hold;
DROP TRIGGER IF EXISTS ledger_entry_immutable ON ledger_entry;
DROP TRIGGER IF EXISTS ledger_entry_post ON ledger_entry;
DROP TRIGGER IF EXISTS ledger_account_guard ON ledger_account;
DROP FUNCTION IF EXISTS ledger_hold_capture_has_entry();
DROP FUNCTION IF EXISTS ledger_hold_guard();
DROP FUNCTION IF EXISTS ledger_entry_immutable();
DROP FUNCTION IF EXISTS ledger_entry_post();
DROP FUNCTION IF EXISTS ledger_account_guard();
"""

SQLITE_CREATE = [
    """CREATE TRIGGER ledger_account_opens_empty BEFORE INSERT ON ledger_account
       WHEN NEW.posted <> 0 OR NEW.held <> 0
       BEGIN SELECT RAISE(ABORT, 'ledger: an account opens at posted 0, held 0'); END""",
    """CREATE TRIGGER ledger_entry_capture_needs_hold BEFORE INSERT ON ledger_entry
       WHEN (NEW.kind = 'CAPTURE' AND NOT EXISTS (
                SELECT 1 FROM ledger_hold WHERE id = NEW.hold_id AND account_id = NEW.account_id
                AND state = 'CAPTURED' AND captured_amount = -NEW.amount))
            OR (NEW.kind <> 'CAPTURE' AND NEW.hold_id IS NOT NULL)
       BEGIN SELECT RAISE(ABORT, 'ledger: a capture entry needs its hold CAPTURED for the same amount'); END""",
    """CREATE TRIGGER ledger_entry_post AFTER INSERT ON ledger_entry
       BEGIN
           UPDATE ledger_account SET posted = posted + NEW.amount WHERE id = NEW.account_id;
           SELECT RAISE(ABORT, 'ledger: entry balance_after is not the posted balance')
               WHERE NEW.balance_after <> (SELECT posted FROM ledger_account WHERE id = NEW.account_id);
       END""",
    """CREATE TRIGGER ledger_entry_no_update BEFORE UPDATE ON ledger_entry
       BEGIN SELECT RAISE(ABORT, 'ledger: entries are immutable'); END""",
    """CREATE TRIGGER ledger_entry_no_delete BEFORE DELETE ON ledger_entry
       BEGIN SELECT RAISE(ABORT, 'ledger: entries are immutable'); END""",
    """CREATE TRIGGER ledger_hold_starts_pending BEFORE INSERT ON ledger_hold
       WHEN NEW.state <> 'PENDING'
       BEGIN SELECT RAISE(ABORT, 'ledger: a hold starts PENDING'); END""",
    """CREATE TRIGGER ledger_hold_place AFTER INSERT ON ledger_hold
       BEGIN UPDATE ledger_account SET held = held + NEW.amount WHERE id = NEW.account_id; END""",
    """CREATE TRIGGER ledger_hold_resolved_immutable BEFORE UPDATE ON ledger_hold
       WHEN OLD.state <> 'PENDING'
       BEGIN SELECT RAISE(ABORT, 'ledger: a hold resolves once'); END""",
    """CREATE TRIGGER ledger_hold_fixed_fields BEFORE UPDATE ON ledger_hold
       WHEN NEW.id <> OLD.id OR NEW.account_id <> OLD.account_id OR NEW.amount <> OLD.amount
            OR NEW.reference <> OLD.reference OR NEW.idempotency_key <> OLD.idempotency_key
       BEGIN SELECT RAISE(ABORT, 'ledger: only the resolution of a hold may change'); END""",
    """CREATE TRIGGER ledger_hold_resolve AFTER UPDATE ON ledger_hold
       WHEN OLD.state = 'PENDING' AND NEW.state <> 'PENDING'
       BEGIN UPDATE ledger_account SET held = held - OLD.amount WHERE id = OLD.account_id; END""",
    """CREATE TRIGGER ledger_hold_no_delete BEFORE DELETE ON ledger_hold
       BEGIN SELECT RAISE(ABORT, 'ledger: holds are never deleted'); END""",
]

SQLITE_TRIGGER_NAMES = [
    "ledger_account_opens_empty",
    "ledger_entry_capture_needs_hold",
    "ledger_entry_post",
    "ledger_entry_no_update",
    "ledger_entry_no_delete",
    "ledger_hold_starts_pending",
    "ledger_hold_place",
    "ledger_hold_resolved_immutable",
    "ledger_hold_fixed_fields",
    "ledger_hold_resolve",
    "ledger_hold_no_delete",
]


def sqlite_create(schema_editor) -> None:
    for statement in SQLITE_CREATE:
        schema_editor.execute(statement, params=None)


def create_triggers(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_CREATE, params=None)
    elif vendor == "sqlite":
        sqlite_create(schema_editor)


def drop_triggers(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_DROP, params=None)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGER_NAMES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0002_permissions_running_balance"),
    ]

    operations = [
        migrations.RunPython(create_triggers, drop_triggers, elidable=False),
    ]
