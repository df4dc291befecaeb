"""`services.uploads_orphaned_sweep`: day-old upload files that no batch names are deleted."""

import io
import os
import time

import pytest
from django.db import transaction

from ems.tenancy import Caller
from endorsements import services
from endorsements.models import EndorsementBatch
from tests.endorsements.test_batch_submit import csv_text

pytestmark = pytest.mark.django_db


def test_the_sweep_deletes_day_old_upload_files_that_no_batch_names(book, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    caller = Caller(kind="client", employer_id=book.employer.pk, principal="client:test")
    content = csv_text([book.add_row()]).encode()

    def submit():
        return services.batch_submit(
            caller=caller, upload=io.BytesIO(content), file_name="a.csv", file_format="CSV"
        )

    kept = submit()
    # a file whose batch was rolled back by the transaction around it (as when the
    # idempotency record cannot be saved after the upload was stored)
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = submit()
        raise RuntimeError("the caller's transaction fails after the file was stored")
    young_orphan = submit()
    EndorsementBatch.objects.filter(pk=young_orphan.pk).delete()
    day_ago = time.time() - 25 * 3600
    for batch in (kept, rolled_back):
        os.utime(tmp_path / batch.file_path, (day_ago, day_ago))
    # one left by a rollback long ago, past the window the hourly sweep looks at
    with pytest.raises(RuntimeError), transaction.atomic():
        ancient = submit()
        raise RuntimeError("rolled back")
    long_ago = time.time() - 9 * 24 * 3600
    os.utime(tmp_path / ancient.file_path, (long_ago, long_ago))

    assert services.uploads_orphaned_sweep() == 1
    assert (tmp_path / kept.file_path).is_file()
    assert not (tmp_path / rolled_back.file_path).exists()
    assert (tmp_path / young_orphan.file_path).is_file()  # may still be committing
    assert (tmp_path / ancient.file_path).is_file()
    assert services.uploads_orphaned_sweep(newer_than_seconds=10 * 24 * 3600) == 1
    assert services.uploads_orphaned_sweep() == 0
