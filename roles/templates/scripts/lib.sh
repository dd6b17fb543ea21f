# kubebake node layer: shell helpers shared by the master and minion scripts (sourced, POSIX
# sh). Settings come from /etc/kubebake/cluster.env (node-contract.md) through the units'
# EnvironmentFile=; every value is checked before it is written into a file.

# The directories can be moved for tests; on a node they are always the defaults.
KUBEBAKE_RUN=${KUBEBAKE_RUN:-/run/kubebake}
KUBEBAKE_K8S_DIR=${KUBEBAKE_K8S_DIR:-/etc/kubernetes}
KUBEBAKE_PKI=$KUBEBAKE_K8S_DIR/pki
KUBEBAKE_MASTER_ENV=$KUBEBAKE_RUN/master.env
KUBEBAKE_CLUSTER_ENV=${KUBEBAKE_CLUSTER_ENV:-/etc/kubebake/cluster.env}
KUBEBAKE_STATE=${KUBEBAKE_STATE:-/var/lib/kubebake}
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

# write_kubeadm_config FILE: the kubeadm configuration the master phases use. Join tokens are
# not kubeadm's: kubebake-master-bootstrap creates them (join_token_secret).
write_kubeadm_config() {
	file=$1
	(
		umask 077
		cat >"$file.tmp" <<CONFIG
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
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
		# The image's kubelet configuration: upload-config publishes it as
		# kube-system/kubelet-config, which kubeadm's join reads.
		if [ -s "$KUBEBAKE_K8S_DIR/kubelet.yaml" ]; then
			echo ---
			cat "$KUBEBAKE_K8S_DIR/kubelet.yaml"
		fi >>"$file.tmp"
	)
	mv -f "$file.tmp" "$file"
}

# Join tokens: bootstrap tokens in the group below, which may ask for a node client certificate
# and nothing more; kubebake-csr-approver decides each request. A token bound to a node (label
# kubebake.dev/node-name) gets a certificate for that name only.
KUBEBAKE_JOIN_GROUP={{sh .JoinTokenGroup}}
KUBEBAKE_NODE_LABEL={{sh .JoinTokenNodeLabel}}

check_node_name() {
	matches "$1" '[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?' ||
		die "node name \"$1\" in KUBEBAKE_JOIN_TOKENS is not a Kubernetes node name"
}

# join_token_secret TOKEN NODE TTL: the Secret (YAML) of a join token that expires TTL seconds
# from now, bound to NODE ("" for the cluster's shared token).
join_token_secret() {
	check_token "$1"
	matches "$3" '[0-9]+' || die "KUBEBAKE_JOIN_TOKEN_TTL \"$3\" is not a number of seconds"
	expiration=$(date -u -d "@$(($(date +%s) + $3))" +%Y-%m-%dT%H:%M:%SZ)
	labels=""
	description="kubebake shared join token: a certificate only for a node name not yet taken"
	if [ -n "$2" ]; then
		check_node_name "$2"
		labels="  labels:
    $KUBEBAKE_NODE_LABEL: \"$2\""
		description="kubebake join token of node $2: a certificate for that name only"
	fi
	cat <<SECRET
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-${1%%.*}
  namespace: kube-system
$labels
type: bootstrap.kubernetes.io/token
stringData:
  description: "$description"
  token-id: "${1%%.*}"
  token-secret: "${1#*.}"
  expiration: "$expiration"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: "$KUBEBAKE_JOIN_GROUP"
SECRET
}

# forget_env VAR...: drops the variables' lines from cluster.env (atomically, mode 0600) once
# their secrets have done their work.
forget_env() {
	[ -f "$KUBEBAKE_CLUSTER_ENV" ] || return 0
	pattern=$(printf '%s|' "$@")
	(
		umask 077
		grep -Ev "^(${pattern%|})=" "$KUBEBAKE_CLUSTER_ENV" >"$KUBEBAKE_CLUSTER_ENV.tmp" || true
	)
	mv -f "$KUBEBAKE_CLUSTER_ENV.tmp" "$KUBEBAKE_CLUSTER_ENV"
}

# wait_for_api KUBECONFIG: returns once the API server answers /readyz.
wait_for_api() {
	tries=0
	until kubectl --kubeconfig "$1" get --raw=/readyz >/dev/null 2>&1; do
		if [ $((tries % 30)) -eq 0 ]; then
			log "waiting for the API server at ${ENDPOINT:-its endpoint}"
		fi
		tries=$((tries + 1))
		sleep 2
	done
}
