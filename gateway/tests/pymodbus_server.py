"""A Modbus RTU slave from pymodbus, an implementation independent of ours, for gateway/tests/cli_field.rs.

Usage: pymodbus_server.py DEVICE UNIT

Serves, on unit UNIT, holding registers from 0x1000 where 0x1008..0x1009 hold 42.5 as an
IEEE 754 float word-swapped (CDAB: low word first) and 0x1000 holds 1234.
Runs until killed.
"""

import struct
import sys

from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartSerialServer


def main() -> None:
    device, unit = sys.argv[1], int(sys.argv[2])
    regs = [0] * 32
    regs[0] = 1234
    hi, lo = struct.unpack(">HH", struct.pack(">f", 42.5))
    regs[8], regs[9] = lo, hi
    # The device context adds 1 to protocol addresses (the 1-based register numbering of the
    # data model), so the block starts one above the protocol address 0x1000.
    block = ModbusSequentialDataBlock(0x1000 + 1, regs)
    context = ModbusServerContext(devices={unit: ModbusDeviceContext(hr=block)}, single=False)
    print("serving", device, "unit", unit, flush=True)
    StartSerialServer(context, framer=FramerType.RTU, port=device, baudrate=9600)


if __name__ == "__main__":
    main()
