# kubebake node layer: shell helpers shared by the master and minion scripts (sourced, POSIX
# sh). Settings come from /etc/kubebake/cluster.env (node-contract.md) through the units'
# EnvironmentFile=; every value is checked before it is written into a file.

# The directories can be moved for tests; on a node they are always the defaults.
KUBEBAKE_RUN=${KUBEBAKE_RUN:-/run/kubebake}
KUBEBAKE_K8S_DIR=${KUBEBAKE_K8S_DIR:-/etc/kubernetes}
KUBEBAKE_PKI=$KUBEBAKE_K8S_DIR/pki
KUBEBAKE_MASTER_ENV=$KUBEBAKE_RUN/master.env
KUBEBAKE_API_PORT=${KUBEBAKE_API_PORT:-6443}
KUBEBAKE_K8S_VERSION={{sh .KubernetesVersion}}
export PATH="${KUBEBAKE_PATH:-/usr/sbin:/usr/bin:/sbin:/bin}"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }

# matches VALUE ERE: whether VALUE matches the extended regular expression.
matches() { printf '%s\n' "$1" | grep -Eqx -- "$2"; }

check_token() {
	matches "$1" '[a-z0-9]{6}\.[a-z0-9]{16}' ||
		die "KUBEBAKE_BOOTSTRAP_TOKEN in /etc/kubebake/cluster.env is not a kubeadm token ([a-z0-9]{6}.[a-z0-9]{16})"
}

check_endpoint() {
	matches "$1" '[A-Za-z0-9.-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}' ||
		die "KUBEBAKE_MASTER_ENDPOINT \"$1\" in /etc/kubebake/cluster.env is not host:port"
}

# node_address prints the address this master advertises: KUBEBAKE_ADVERTISE_ADDRESS, else
# the master endpoint's host when it is one of this node's addresses, else the first IPv4
# address of the node.
node_address() {
	if [ -n "${KUBEBAKE_ADVERTISE_ADDRESS:-}" ]; then
		matches "$KUBEBAKE_ADVERTISE_ADDRESS" '[0-9.]+|[0-9A-Fa-f:]+' ||
			die "KUBEBAKE_ADVERTISE_ADDRESS \"$KUBEBAKE_ADVERTISE_ADDRESS\" is not an IP address"
		printf '%s\n' "$KUBEBAKE_ADVERTISE_ADDRESS"
		return
	fi
	addrs=$(hostname -I 2>/dev/null || true)
	host=${KUBEBAKE_MASTER_ENDPOINT:-}
	host=${host%:*}
	for a in $addrs; do
		if [ "$a" = "$host" ]; then
			printf '%s\n' "$a"
			return
		fi
	done
	for a in $addrs; do
		case $a in
		*:*) ;;
		*)
			printf '%s\n' "$a"
			return
			;;
		esac
	done
	die "found no address to advertise (hostname -I: \"$addrs\"); set KUBEBAKE_ADVERTISE_ADDRESS in /etc/kubebake/cluster.env"
}

# master_settings sets CLUSTER_NAME, ADVERTISE, ENDPOINT and NODE_NAME from cluster.env, with
# defaults for a master started by the marker alone.
master_settings() {
	CLUSTER_NAME=${KUBEBAKE_CLUSTER_NAME:-kubernetes}
	matches "$CLUSTER_NAME" '[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?' ||
		die "KUBEBAKE_CLUSTER_NAME \"$CLUSTER_NAME\" is not a DNS label"
	ADVERTISE=$(node_address)
	if [ -n "${KUBEBAKE_MASTER_ENDPOINT:-}" ]; then
		ENDPOINT=$KUBEBAKE_MASTER_ENDPOINT
	else
		case $ADVERTISE in
		*:*) ENDPOINT="[$ADVERTISE]:$KUBEBAKE_API_PORT" ;;
		*) ENDPOINT="$ADVERTISE:$KUBEBAKE_API_PORT" ;;
		esac
	fi
	check_endpoint "$ENDPOINT"
	NODE_NAME=$(uname -n | tr '[:upper:]' '[:lower:]')
	matches "$NODE_NAME" '[a-z0-9]([-a-z0-9.]*[a-z0-9])?' ||
		die "host name \"$NODE_NAME\" is not a valid Kubernetes node name"
}

# load_master_env sets what master_settings set, from the file kubebake-master-pki wrote.
load_master_env() {
	[ -s "$KUBEBAKE_MASTER_ENV" ] || die "$KUBEBAKE_MASTER_ENV is missing: kubebake-master-pki.service has not run"
	# shellcheck disable=SC1090
	. "$KUBEBAKE_MASTER_ENV"
	CLUSTER_NAME=$KUBEBAKE_CLUSTER_NAME
	ADVERTISE=$KUBEBAKE_ADVERTISE_ADDRESS
	ENDPOINT=$KUBEBAKE_MASTER_ENDPOINT
	NODE_NAME=$KUBEBAKE_NODE_NAME
}

# write_kubeadm_config FILE [token]: the kubeadm configuration the master phases use. With
# "token" it carries the bootstrap token from cluster.env (the file is then 0600 and removed
# by the caller).
write_kubeadm_config() {
	file=$1
	tokens=""
	if [ "${2:-}" = token ] && [ -n "${KUBEBAKE_BOOTSTRAP_TOKEN:-}" ]; then
		check_token "$KUBEBAKE_BOOTSTRAP_TOKEN"
		tokens="bootstrapTokens:
- token: \"$KUBEBAKE_BOOTSTRAP_TOKEN\"
  description: kubebake cluster bundle token
  ttl: 0s
  usages: [signing, authentication]
  groups: [\"system:bootstrappers:kubeadm:default-node-token\"]"
	fi
	(
		umask 077
		cat >"$file.tmp" <<CONFIG
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
$tokens
localAPIEndpoint:
  advertiseAddress: "$ADVERTISE"
  bindPort: $KUBEBAKE_API_PORT
nodeRegistration:
  name: "$NODE_NAME"
  criSocket: "{{heredoc .CRISocket}}"
  taints: []
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: "$CLUSTER_NAME"
kubernetesVersion: "$KUBEBAKE_K8S_VERSION"
controlPlaneEndpoint: "$ENDPOINT"
certificatesDir: $KUBEBAKE_PKI
networking:
  dnsDomain: {{heredoc .DNSDomain}}
  podSubnet: "{{heredoc .PodCIDR}}"
  serviceSubnet: "{{heredoc .ServiceCIDR}}"
etcd:
  local:
    dataDir: /var/lib/etcd
CONFIG
	)
	mv -f "$file.tmp" "$file"
}
