"""The tenant is at the bottom: `ems` and `ledger` stand on nothing in `endorsements`.

Read from the code, migrations included: no module of theirs imports a domain app above
it, none of their models has a relation into `endorsements`, and none of their
migrations depends on one of that app's (it is `endorsements/0001_initial` that declares
it runs before `ems/0001_initial`, whose state takes over the tenant's tables).
"""

import ast
from pathlib import Path

from django.apps import apps
from django.db.migrations.loader import MigrationLoader

DOMAIN_APPS = {"endorsements", "ledger", "insurers", "analytics", "reconciliation"}
BELOW = {"ems": DOMAIN_APPS, "ledger": {"endorsements", "analytics", "reconciliation"}}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_no_module_imports_an_app_above_it():
    for app, above in BELOW.items():
        for path in Path(app).rglob("*.py"):
            assert not imported_packages(path) & above, path


def test_no_model_points_into_endorsements():
    for app in BELOW:
        for model in apps.get_app_config(app).get_models():
            for field in model._meta.get_fields():
                if field.is_relation and field.concrete and field.related_model is not None:
                    assert field.related_model._meta.app_label != "endorsements", (model, field.name)


def test_no_migration_depends_on_endorsements():
    """What a migration declares; `endorsements` may order itself before them (`run_before`)."""
    migrations = MigrationLoader(None, ignore_no_migrations=True).disk_migrations
    for (app, name), migration in migrations.items():
        if app in BELOW:
            assert "endorsements" not in {label for label, _ in migration.dependencies}, (app, name)
            assert not getattr(migration, "run_before", []), (app, name)
