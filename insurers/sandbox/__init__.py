"""The sandbox insurer: a simulated insurer that speaks REST, SOAP and SFTP on loopback.

`engine` is its protocol-free brain (its own roster, CD account and received requests in
its own SQLite file); `rest` is its HTTP face; `manage.py run_sandbox` serves every face
from one process. It is never mounted in EMS's URLconf: EMS reaches it only as an insurer.
"""
