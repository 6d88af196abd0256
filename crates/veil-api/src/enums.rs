//! A macro for the closed enumerations Istio and Kubernetes validate (modes, protocols,
//! resolutions, …): parsing is strict, and an unknown value yields the operator-facing
//! message `unknown <thing> "X"; expected one of A, B, C`.

/// Declares a string enum with strict, optionally case-insensitive parsing.
macro_rules! strict_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident: $thing:literal, case_insensitive = $ci:literal {
            $( $(#[$vm:meta])* $var:ident = $s:literal, )+
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vm])* $var, )+
        }

        impl $name {
            /// Every value, in the order Istio/Kubernetes documents them.
            pub const ALL: &'static [$name] = &[$($name::$var,)+];

            /// The canonical spelling of this value, as written in YAML.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s,)+ }
            }

            /// Parses one value; `None` when it is not one of [`Self::ALL`].
            pub fn parse(text: &str) -> Option<Self> {
                let upper;
                let text = if $ci {
                    upper = text.to_ascii_uppercase();
                    upper.as_str()
                } else {
                    text
                };
                match text { $($s => Some($name::$var),)+ _ => None }
            }

            /// The message for a value that is not accepted.
            pub fn unknown_message(text: &str) -> String {
                let expected: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown {} \"{}\"; expected one of {}", $thing, text, expected.join(", "))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Rejecting inside the visitor lets serde_yaml_ng attach the scalar's own
                // path and line to the error.
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a {}", $thing)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::parse(text).ok_or_else(|| E::custom($name::unknown_message(text)))
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    };
}

pub(crate) use strict_enum;
