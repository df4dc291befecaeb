"""Template filters for `ems.formatting`: `{{ amount|money }}`, `{{ amount|money:"INR" }}`,
`{{ moment|local_time }}`."""

from django import template

from ems.formatting import money_text, time_text

register = template.Library()
register.filter("money", money_text)
register.filter("local_time", time_text)
