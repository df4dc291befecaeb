"""Date formats for English pages: every moment in the project's zone, the zone named.

Django shows an aware datetime in the current time zone (`TIME_ZONE`) with these formats
(the admin's lists and read-only fields, the `date` filter's default); the same form as
`ems.formatting.time_text`, "2026-12-02 18:05:09 IST", so no page mixes two.
"""

DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
