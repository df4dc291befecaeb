"""Adapters by protocol: `adapter_for(insurer)` picks the one for `insurer.protocol`.

Adding an insurer is configuration (protocol, endpoint, connection, credentials); adding a
protocol is one class registered here.
"""

from importlib import import_module

from insurers.adapters.base import Adapter

# protocol -> "module:Class", imported on first use so a REST-only worker never loads zeep or paramiko
ADAPTERS = {
    "REST": "insurers.adapters.rest:RestAdapter",
    "SOAP": "insurers.adapters.soap:SoapAdapter",
    "SFTP": "insurers.adapters.sftp:SftpAdapter",
}
_instances: dict[str, Adapter] = {}


def adapter_for(insurer) -> Adapter:
    protocol = insurer.protocol
    if protocol not in _instances:
        module_name, class_name = ADAPTERS[protocol].split(":")
        _instances[protocol] = getattr(import_module(module_name), class_name)()
    return _instances[protocol]
