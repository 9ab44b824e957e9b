module mosquitto-ha

go 1.26

require (
	github.com/eclipse/paho.mqtt.golang v1.5.1
	github.com/hashicorp/go-multierror v1.1.1
	github.com/spf13/pflag v1.0.10
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/hashicorp/errwrap v1.0.0 // indirect
	golang.org/x/net v0.44.0 // indirect
	golang.org/x/sync v0.17.0 // indirect
)
