"""The HPMC: policies behind one interface. Pure: time and forecasts are passed in."""
