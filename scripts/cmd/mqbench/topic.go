package main

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// topicMatches reports whether the MQTT topic filter matches the topic name (MQTT 3.1.1 4.7):
// "+" matches one level (an empty one too), "#" as the last level matches the parent and every
// level below, and a filter starting with a wildcard does not match a topic starting with "$".
func topicMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if level != "+" && level != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// validTopic checks a topic name for publishing.
func validTopic(t string) error {
	if err := validString(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return errors.New("a topic name must not contain + or #")
	}
	return nil
}

// validFilter checks a subscription filter.
func validFilter(f string) error {
	if err := validString(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return errors.New("# must be a whole level and the last one: " + f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return errors.New("+ must be a whole level: " + f)
		}
	}
	return nil
}

func validString(s string) error {
	switch {
	case s == "":
		return errors.New("empty topic")
	case len(s) > 65535:
		return errors.New("topic longer than 65535 bytes")
	case !utf8.ValidString(s):
		return errors.New("topic is not UTF-8")
	case strings.ContainsRune(s, 0):
		return errors.New("topic contains NUL")
	}
	return nil
}
