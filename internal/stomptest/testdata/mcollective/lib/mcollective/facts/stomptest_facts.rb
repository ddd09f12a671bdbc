# A YAML facts source for the stomptest MCollective case.
#
# Debian bookworm's yaml_facts plugin calls YAML.safe_load with the
# positional arguments of Psych 3; Ruby 3.1 ships Psych 4, which takes
# keywords only, so the call raises, the plugin logs the error and every
# node has no facts (and `mco -F` matches nothing). This plugin reads the
# same file format with the keyword form.
#
# Configuration: factsource = stomptest, plugin.stomptest = /path/facts.yaml
module MCollective
  module Facts
    require "yaml"

    class Stomptest_facts < Base
      def load_facts_from_source
        file = Config.instance.pluginconf["stomptest"]
        facts = YAML.safe_load(File.read(file), permitted_classes: [Symbol], aliases: true) || {}
        facts.each_with_object({}) { |(k, v), h| h[k.to_s] = v.to_s }
      rescue StandardError => e
        Log.error("stomptest facts: cannot read #{file}: #{e.class}: #{e}")
        {}
      end
    end
  end
end
