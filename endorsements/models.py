"""Employers, their people and policies, and the endorsement requests that change them.

One module, a little over 600 lines, on purpose: the request's columns, indexes and
constraints are read together with the policy book they point at (the pipeline's columns
added to it; its behaviour lives in transitions.py and endorsements/pipeline/).

Design overview
- The tenant (`ems.models.Employer`) and its HR users and API clients live in the
  platform; every model here that belongs to an employer points down to it.
- `Policy` is an employer × insurer master policy; `Plan` and `PlanRate` are its rate
  card (annual premium in minor units by relation × age band × sum insured).
- `Member` is an employee (`SELF`) or a dependant linked to the employee; `Coverage` is a
  member on a policy. At most one open coverage per member and policy (partial unique
  index). Activation (`pipeline/activation.py`) writes both: a cover ends ENDED the day
  before a deletion takes effect, or VOID when deleted on its start date.
- `EndorsementRequest` moves through the states of `EndorsementState`; every move is
  recorded in `EndorsementTransition` (written only by `endorsements.transitions`), a
  file's row's arrival and intake decision as one compact step (`"" -> decided state`).
  `EndorsementBatch` is an uploaded file and `BatchRowError` its per-row errors.

Money is integer minor units (paise). Sums insured are whole currency units, as in the
upload file.
"""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from ems.identifiers import new_tracking_id


class Relation(models.TextChoices):
    SELF = "SELF"
    SPOUSE = "SPOUSE"
    CHILD = "CHILD"
    PARENT = "PARENT"
    PARENT_IN_LAW = "PARENT_IN_LAW"


class Gender(models.TextChoices):
    MALE = "M"
    FEMALE = "F"
    OTHER = "X"


class Policy(models.Model):
    class ProRataMethod(models.TextChoices):
        DAILY = "DAILY", "Daily pro rata"
        SHORT_PERIOD = "SHORT_PERIOD", "Short-period scale"

    employer = models.ForeignKey("ems.Employer", on_delete=models.PROTECT, related_name="policies")
    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.PROTECT, related_name="policies")
    number = models.CharField(max_length=64)
    start_date = models.DateField()
    end_date = models.DateField(help_text="last day of cover, inclusive")
    currency = models.CharField(max_length=3, default="INR")
    pro_rata_method = models.CharField(
        max_length=12, choices=ProRataMethod.choices, default=ProRataMethod.DAILY
    )
    refund_method = models.CharField(
        max_length=12, choices=ProRataMethod.choices, default=ProRataMethod.DAILY
    )
    short_period_scale = models.JSONField(
        default=list,
        blank=True,
        help_text="[[months_elapsed_up_to, percent_of_annual_retained], ...] e.g. [[1, 20], [3, 40]]",
    )
    tax_rate_bps = models.PositiveIntegerField(default=1800, help_text="basis points; 1800 = 18%")
    backdating_limit_days = models.PositiveIntegerField(default=30)
    joiner_window_days = models.PositiveIntegerField(default=30)
    marriage_window_days = models.PositiveIntegerField(default=30)
    newborn_window_days = models.PositiveIntegerField(default=30)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["employer__code", "number"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["insurer", "number"], name="policy_unique_number"),
            models.CheckConstraint(
                condition=Q(end_date__gt=models.F("start_date")),
                name="policy_period_valid",
            ),
            models.CheckConstraint(condition=Q(tax_rate_bps__lte=10000), name="policy_tax_rate_bounded"),
        ]

    def __str__(self) -> str:
        return self.number


class Plan(models.Model):
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="plans")
    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    sum_insured_options = models.JSONField(default=list, help_text="whole currency units")
    age_limits = models.JSONField(
        default=dict,
        blank=True,
        help_text='{"SELF": [18, 65], "CHILD": [0, 25], ...} (years, inclusive)',
    )

    class Meta:
        ordering = ["policy__number", "code"]
        constraints = [models.UniqueConstraint(fields=["policy", "code"], name="plan_unique_code")]

    def __str__(self) -> str:
        return f"{self.policy.number}/{self.code}"


class PlanRate(models.Model):
    """One rate-card cell: annual premium for a relation, an age band and a sum insured."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="rates")
    relation = models.CharField(max_length=16, choices=Relation.choices)
    age_from = models.PositiveSmallIntegerField()
    age_to = models.PositiveSmallIntegerField()
    sum_insured = models.BigIntegerField(help_text="whole currency units")
    annual_premium = models.BigIntegerField(help_text="minor units, before tax")

    class Meta:
        ordering = ["plan", "relation", "sum_insured", "age_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "relation", "sum_insured", "age_from"],
                name="plan_rate_unique_band",
            ),
            models.CheckConstraint(
                condition=Q(age_to__gte=models.F("age_from")),
                name="plan_rate_band_valid",
            ),
            models.CheckConstraint(
                condition=Q(annual_premium__gte=0),
                name="plan_rate_premium_non_negative",
            ),
            models.CheckConstraint(condition=Q(sum_insured__gt=0), name="plan_rate_sum_insured_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.plan} {self.relation} {self.age_from}-{self.age_to} {self.sum_insured}"


class Member(models.Model):
    employer = models.ForeignKey("ems.Employer", on_delete=models.PROTECT, related_name="members")
    employee_code = models.CharField(max_length=64)
    relation = models.CharField(max_length=16, choices=Relation.choices)
    primary = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="dependants",
    )
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100, blank=True)
    date_of_birth = models.DateField()
    gender = models.CharField(max_length=1, choices=Gender.choices)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=16, blank=True)
    date_of_joining = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["employer__code", "employee_code", "relation"]
        indexes = [models.Index(fields=["employer", "employee_code"], name="member_employee_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["employer", "employee_code"],
                condition=Q(relation="SELF"),
                name="member_unique_employee",
            ),
            models.CheckConstraint(
                condition=(Q(relation="SELF") & Q(primary__isnull=True))
                | (~Q(relation="SELF") & Q(primary__isnull=False)),
                name="member_dependant_has_primary",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.employee_code} {self.relation} {self.first_name}"


class Coverage(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        ACTIVE = "ACTIVE"
        ENDED = "ENDED"
        # Deleted effective on its start date: never in force (it ends the day before it starts).
        VOID = "VOID"

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="coverages")
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="coverages")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="coverages")
    sum_insured = models.BigIntegerField(help_text="whole currency units")
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    insurer_member_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["policy", "member"]
        constraints = [
            models.UniqueConstraint(
                fields=["member", "policy"],
                condition=Q(status__in=["PENDING", "ACTIVE"]),
                name="coverage_one_open_per_policy",
            ),
            models.CheckConstraint(condition=Q(sum_insured__gt=0), name="coverage_sum_insured_positive"),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True)
                | Q(end_date__gte=models.F("start_date"))
                | Q(status="VOID"),
                name="coverage_period_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member} on {self.policy}"


class EndorsementType(models.TextChoices):
    ADD = "ADD"
    DELETE = "DELETE"
    CORRECTION = "CORRECTION"


class EndorsementState(models.TextChoices):
    RECEIVED = "RECEIVED"
    VALIDATED = "VALIDATED"
    REJECTED = "REJECTED"
    ON_HOLD_FUNDS = "ON_HOLD_FUNDS"
    ON_HOLD_REVIEW = "ON_HOLD_REVIEW"
    FUND_LOCKED = "FUND_LOCKED"
    SENT = "SENT"
    CONFIRMED = "CONFIRMED"
    ACTIVE = "ACTIVE"
    INSURER_REJECTED = "INSURER_REJECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SUPERSEDED = "SUPERSEDED"


class SlaStatus(models.TextChoices):
    NONE = "", "within SLA"
    NEAR = "NEAR", "near breach"
    BREACHED = "BREACHED", "breached"


# The states in which a request's SLA clock runs: validated, not yet confirmed by the
# insurer, not closed without effect (FAILED counts: the insurer does not have it yet).
SLA_CLOCK_STATES = ("VALIDATED", "ON_HOLD_FUNDS", "ON_HOLD_REVIEW", "FUND_LOCKED", "SENT", "FAILED")


class Source(models.TextChoices):
    API = "API"
    CSV = "CSV"
    ADMIN = "ADMIN"


class EndorsementBatch(models.Model):
    class State(models.TextChoices):
        RECEIVED = "RECEIVED"
        PROCESSING = "PROCESSING"
        COMPLETED = "COMPLETED"
        FAILED = "FAILED"

    class Format(models.TextChoices):
        CSV = "CSV"
        JSON = "JSON"

    employer = models.ForeignKey("ems.Employer", on_delete=models.PROTECT, related_name="batches")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    api_client = models.ForeignKey(
        "ems.ApiClient",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batches",
    )
    source = models.CharField(max_length=8, choices=Source.choices)
    file_name = models.CharField(max_length=255, blank=True)
    file_format = models.CharField(max_length=4, choices=Format.choices)
    file_path = models.CharField(max_length=500, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    file_bytes = models.BigIntegerField(default=0)
    state = models.CharField(max_length=10, choices=State.choices, default=State.RECEIVED)
    rows_total = models.PositiveIntegerField(default=0)
    accepted_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    rows_expected = models.PositiveIntegerField(
        default=0, help_text="upper bound on data rows, from line endings; the progress denominator"
    )
    rows_parsed = models.PositiveIntegerField(
        default=0, help_text="data rows read and committed so far, all partitions together"
    )
    parsed_at = models.DateTimeField(null=True, blank=True, help_text="the whole file has been read")
    partitions = models.PositiveSmallIntegerField(
        default=1, help_text="workers reading the file at once, each for its own employee codes"
    )
    partition_positions = models.JSONField(
        default=dict,
        blank=True,
        help_text='per partition: {"position": records of the file passed, "done": read to the end}',
    )
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="the last progress: processing started or resumed, a chunk committed"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "endorsement batches"
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="batch_progress_bounded"),
        ]
        # The stalled-batch sweep reads the unfinished batches only.
        indexes = [
            models.Index(
                fields=["created_at"],
                name="batch_unfinished_idx",
                condition=Q(state__in=["RECEIVED", "PROCESSING"]),
            )
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.file_name})"


class BatchRowError(models.Model):
    batch = models.ForeignKey(EndorsementBatch, on_delete=models.CASCADE, related_name="row_errors")
    row_number = models.PositiveIntegerField()
    # The rejected request's tracking id; empty for a row that failed its format checks,
    # which is never stored as a request.
    # (a database default too: processes of the last release COPY rows without it)
    tracking_id = models.CharField(max_length=32, blank=True, db_default="")
    column = models.CharField(max_length=64, blank=True)
    code = models.CharField(max_length=64)
    message = models.CharField(max_length=500)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["batch", "row_number", "id"]
        indexes = [models.Index(fields=["batch", "row_number"], name="batch_row_error_idx")]

    def __str__(self) -> str:
        return f"row {self.row_number}: {self.code}"


# The time each state was reached: never before the request was received.
STATE_TIME_FIELDS = (
    "validated_at",
    "on_hold_review_at",
    "on_hold_funds_at",
    "fund_locked_at",
    "sent_at",
    "confirmed_at",
    "activated_at",
    "closed_at",
)


def _reached_after_received() -> Q:
    condition = Q()
    for field in STATE_TIME_FIELDS:
        condition &= Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__gte": F("received_at")})
    return condition


class EndorsementRequest(models.Model):
    # Unique through a constraint below, not `unique=True`: on PostgreSQL that would also
    # build a second, `LIKE`-only index of every id, which nothing queries.
    tracking_id = models.CharField(max_length=32, default=new_tracking_id, editable=False)
    # Indexes cost every intake row an entry (and again on each state change), so the
    # table keeps only those queries use: employer lookups go through the composite
    # indexes below, batch lookups through (batch, row_number).
    employer = models.ForeignKey(
        "ems.Employer", on_delete=models.PROTECT, related_name="endorsements", db_index=False
    )
    policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="endorsements",
        db_index=False,  # (policy, member_key) below leads with it
    )
    member = models.ForeignKey(
        Member,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="endorsements",
        db_index=False,  # a partial index below: additions have no member yet
    )
    type = models.CharField(max_length=10, choices=EndorsementType.choices)
    member_data = models.JSONField(default=dict)
    effective_date = models.DateField(null=True, blank=True)
    premium_amount = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="signed minor units incl. tax: debit > 0, credit < 0",
    )
    tax_amount = models.BigIntegerField(null=True, blank=True)
    content_hash = models.CharField(max_length=64)  # indexed below (equality only)
    member_key = models.CharField(
        max_length=200,
        blank=True,
        help_text="who the request is about (employee code, relation, dependant); supersede matches on it",
    )
    idempotency_key = models.CharField(max_length=255, blank=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    batch = models.ForeignKey(
        EndorsementBatch,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="endorsements",
        db_index=False,
    )
    row_number = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(
        max_length=16,
        choices=EndorsementState.choices,
        default=EndorsementState.RECEIVED,
    )
    rejection_reasons = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    insurer_reference = models.CharField(max_length=100, blank=True)
    superseded_by = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="supersedes",
        db_index=False,  # a partial index below: almost every row has none
    )
    # --- the pipeline's columns (scheduler, gateway, confirmation, SLA) ---
    dispatch = models.ForeignKey(
        "insurers.Dispatch",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # a partial index below: only sent requests have one
        help_text="the live dispatch that carries this request to the insurer",
    )
    insurer_premium = models.BigIntegerField(
        null=True, blank=True, help_text="the insurer's figure, signed minor units like premium_amount"
    )
    # Database defaults too: the file path inserts rows by raw SQL and names only its columns.
    insurer_member_id = models.CharField(max_length=80, blank=True, default="", db_default="")
    discrepancy = models.JSONField(
        default=dict,
        db_default=models.Value({}, models.JSONField()),
        blank=True,
        help_text="where the insurer's answer differs from ours: field -> {ours, theirs}",
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="the next send attempt is due")
    sla_deadline = models.DateTimeField(null=True, blank=True)
    sla_status = models.CharField(
        max_length=8, choices=SlaStatus.choices, blank=True, default="", db_default=""
    )
    resubmission_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="resubmissions",
        db_index=False,
        help_text="the rejected request this one corrects",
    )
    linked_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="linked",
        db_index=False,
        help_text="the employee's DELETE that made this dependant's DELETE",
    )
    received_at = models.DateTimeField(auto_now_add=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    on_hold_funds_at = models.DateTimeField(null=True, blank=True)
    on_hold_review_at = models.DateTimeField(null=True, blank=True)
    fund_locked_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="rejected, cancelled, superseded, failed"
    )
    updated_at = models.DateTimeField(auto_now=True)
    # Its timestamps in the order they happen (the admin's timeline, the portal's list).
    TIMELINE_FIELDS = (
        "received_at",
        "validated_at",
        "on_hold_review_at",
        "on_hold_funds_at",
        "fund_locked_at",
        "sent_at",
        "confirmed_at",
        "activated_at",
        "closed_at",
        "updated_at",
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["employer", "state"], name="endorsement_state_idx"),
            models.Index(fields=["employer", "-received_at"], name="endorsement_recent_idx"),
            models.Index(fields=["batch", "row_number"], name="endorsement_batch_row_idx"),
            # Supersede and a dependant's employee look requests up by (policy, member key),
            # one index probe per key (bulk_writes.rows_by_keys): both columns lead.
            models.Index(fields=["policy", "member_key"], name="endorsement_policy_member_idx"),
            models.Index(fields=["content_hash"], name="endorsement_content_hash_idx"),
            models.Index(fields=["member"], name="endorsement_member_idx", condition=Q(member__isnull=False)),
            # Deleting or superseding checks who points at a row; NULLs need no entry.
            models.Index(
                fields=["superseded_by"],
                name="endorsement_superseded_by_idx",
                condition=Q(superseded_by__isnull=False),
            ),
            # The sweep for requests whose validation message was lost: RECEIVED rows only.
            models.Index(
                fields=["received_at"],
                name="endorsement_received_queue_idx",
                condition=Q(state="RECEIVED"),
            ),
            # The scheduler's windows: validated requests, oldest first.
            models.Index(
                fields=["validated_at"], name="endorsement_validated_idx", condition=Q(state="VALIDATED")
            ),
            # The activation sweep: confirmed requests by effective date.
            models.Index(
                fields=["effective_date"], name="endorsement_confirmed_idx", condition=Q(state="CONFIRMED")
            ),
            models.Index(
                fields=["next_attempt_at"],
                name="endorsement_next_attempt_idx",
                condition=Q(next_attempt_at__isnull=False),
            ),
            # The SLA sweep (pipeline/sla.py): running clocks not yet breached, by deadline;
            # and running clocks without a deadline (validated by a path that set none).
            models.Index(
                fields=["sla_deadline"],
                name="endorsement_sla_open_idx",
                condition=Q(sla_deadline__isnull=False, state__in=SLA_CLOCK_STATES)
                & ~Q(sla_status="BREACHED"),
            ),
            models.Index(
                fields=["received_at"],
                name="endorsement_sla_unset_idx",
                condition=Q(sla_deadline__isnull=True, state__in=SLA_CLOCK_STATES),
            ),
            models.Index(
                fields=["dispatch"], name="endorsement_dispatch_idx", condition=Q(dispatch__isnull=False)
            ),
            models.Index(
                fields=["linked_to"], name="endorsement_linked_to_idx", condition=Q(linked_to__isnull=False)
            ),
            models.Index(
                fields=["resubmission_of"],
                name="endorsement_resubmission_idx",
                condition=Q(resubmission_of__isnull=False),
            ),
        ]
        permissions = [
            ("retry_endorsementrequest", "Can retry a failed endorsement request (same idempotency key)"),
            ("cancel_endorsementrequest", "Can cancel an endorsement request"),
            ("review_endorsementrequest", "Can approve or reject an endorsement request on review hold"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(attempts__gte=0), name="endorsement_attempts_non_negative"),
            models.CheckConstraint(
                condition=_reached_after_received(), name="endorsement_states_after_received"
            ),
            models.UniqueConstraint(fields=["tracking_id"], name="endorsement_tracking_id_unique"),
        ]

    def __str__(self) -> str:
        return self.tracking_id

    def history(self) -> list:
        """The full state history, oldest first, as steps with from_state, to_state, actor,
        reason and at: every recorded `EndorsementTransition` (prefetch `transitions`)."""
        recorded = sorted(self.transitions.all(), key=lambda t: (t.at, t.id))
        return [step for transition in recorded for step in transition.steps()]


# Who validates: the actor of every validation decision in the history and the audit trail.
VALIDATION_ACTOR = "system:validation"


def rejection_codes(reasons) -> str:
    """A rejection's reasons as the history and the events show them: "code; code"."""
    return "; ".join(r.get("code", "") for r in reasons or [])[:500]


@dataclass(frozen=True)
class HistoryStep:
    """One move of an endorsement's history (a compact intake step holds two)."""

    from_state: str
    to_state: str
    actor: str
    reason: str
    at: datetime


class EndorsementTransition(models.Model):
    """One recorded state change: the history shown in the timeline."""

    # No database constraint: a file's chunk COPYs one intake step per row, and PostgreSQL
    # checks a constraint row by row at commit (0.9 s per 100,000 rows, more than the COPY of
    # the steps). Only `transitions.py` writes these rows, in the transaction that writes
    # the request they name; requests are never deleted but with their history (CASCADE).
    endorsement = models.ForeignKey(
        EndorsementRequest, on_delete=models.CASCADE, related_name="transitions", db_constraint=False
    )
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16)
    actor = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["endorsement", "at", "id"]

    def __str__(self) -> str:
        return f"{self.endorsement_id}: {self.from_state} -> {self.to_state}"

    @property
    def is_intake_step(self) -> bool:
        """A file's row's compact intake step: arrival and validation in one record
        (`"" -> <decided state>` by `batch:<id>`, the reason the decision's codes)."""
        return not self.from_state and self.to_state != EndorsementState.RECEIVED

    def steps(self) -> list:
        """The moves this record holds: itself, or for an intake step its arrival and decision."""
        if not self.is_intake_step:
            return [self]
        return [
            HistoryStep("", EndorsementState.RECEIVED, self.actor, "", self.at),
            HistoryStep(EndorsementState.RECEIVED, self.to_state, VALIDATION_ACTOR, self.reason, self.at),
        ]


class DeadLetter(EndorsementRequest):
    """The admin's dead-letter list: FAILED and stuck requests (endorsements/pipeline/dead_letters.py)."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        ordering = ["updated_at", "id"]
