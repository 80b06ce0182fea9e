"""SNMP rack PDUs (APC PowerNet-MIB rPDU / rPDU2): pure codec, snmprec format, async client."""
