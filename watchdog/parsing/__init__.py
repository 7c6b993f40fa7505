"""Reading what operators write: YAML files with located problems, field types, file modes."""
