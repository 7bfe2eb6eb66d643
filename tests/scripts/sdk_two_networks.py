"""openstacksdk against nimbus: two networks with their subnets, a server on both, a stop and a start.

Run by the suite (tests/it/openstack_cli.rs) with the CLI's venv python; OS_CLOUD names the cloud.
Prints one JSON line of what it saw; any failure raises, and the exit status says so.
"""

import json

import openstack

conn = openstack.connect()
image = conn.image.find_image("cirros-0.6.2-x86_64-disk", ignore_missing=False)
flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)

networks = []
for name, cidr in [("sdk-a", "10.80.0.0/24"), ("sdk-b", "10.81.0.0/24")]:
    network = conn.network.create_network(name=name)
    conn.network.create_subnet(network_id=network.id, cidr=cidr, ip_version=4, name=f"{name}-sub")
    networks.append(network)

server = conn.compute.create_server(
    name="sdk-vm",
    image_id=image.id,
    flavor_id=flavor.id,
    networks=[{"uuid": network.id} for network in networks],
)
server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60)
addresses = sorted(a["addr"] for nics in server.addresses.values() for a in nics)

# wait_for_server refreshes and returns the object it is given: read each status when it is reached.
conn.compute.stop_server(server)
stopped = conn.compute.wait_for_server(server, status="SHUTOFF", wait=60).status
conn.compute.start_server(server)
started = conn.compute.wait_for_server(server, status="ACTIVE", wait=60).status
ports = sorted(p.fixed_ips[0]["ip_address"] for p in conn.network.ports(device_id=server.id))

conn.compute.delete_server(server)
conn.compute.wait_for_delete(server, wait=60)
for network in networks:
    conn.network.delete_network(network)
left = [n.name for n in conn.network.networks() if n.name.startswith("sdk-")]

print(json.dumps({
    "addresses": addresses,
    "ports": ports,
    "stopped": stopped,
    "started": started,
    "networks_left": left,
}))
