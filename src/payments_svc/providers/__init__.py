"""Payment providers behind one interface (base.Provider), looked up in a registry."""
