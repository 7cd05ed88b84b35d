package controller

// refreshInterfaceGauges sets the per-interface gauges from the
// interfaces' state: up (subflows can use it) and healthy (the last health
// verdict; only handover and priority steering sample it, so under the
// other modes it stays 1). Interfaces that left the policy disappear.
func (c *Controller) refreshInterfaceGauges() {
	c.m.InterfaceUp.Reset()
	c.m.InterfaceHealthy.Reset()
	for _, i := range c.ifs {
		role := string(i.pol.Role)
		c.m.InterfaceUp.WithLabelValues(i.name, role).Set(b2f(i.available()))
		c.m.InterfaceHealthy.WithLabelValues(i.name, role).Set(b2f(!i.health.unhealthy))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
