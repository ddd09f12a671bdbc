package deps
import (
 _ "go.yaml.in/yaml/v3"
 _ "go.uber.org/goleak"
 _ "github.com/eclipse/paho.mqtt.golang"
 _ "github.com/eclipse/paho.golang/paho"
 _ "github.com/gobwas/ws"
 _ "golang.org/x/crypto/argon2"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/HdrHistogram/hdrhistogram-go"
)
