"""Operations: arrays in, arrays out. Ops never open files."""
