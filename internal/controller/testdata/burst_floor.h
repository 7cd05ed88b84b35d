// What BenchmarkBurst's floors in C (burst_floor.c, burst_floor_rt.c)
// share: the lte interface's index and IPv4 address, from which each
// sends its creates.
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>

// lte_of finds ifname's index and IPv4 address; 0 if it has none.
static int lte_of(const char *ifname, int *ifindex, struct in_addr *addr) {
	struct ifaddrs *ifs;
	*ifindex = if_nametoindex(ifname);
	addr->s_addr = 0;
	if (getifaddrs(&ifs) < 0)
		return 0;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
		if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && strcmp(i->ifa_name, ifname) == 0)
			*addr = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
	freeifaddrs(ifs);
	return *ifindex && addr->s_addr;
}
